"""main: flags named exactly like the config fields, --flagfile, and one line per bad flag before any model is built."""

import dataclasses
import os
import subprocess
import sys

import pytest

from tltrain import main as main_lib
from tltrain import config as config_lib
from tltrain import fields
from tltrain.config import RunConfig

FLAGS = main_lib.FLAGS


def parse(*args: str) -> RunConfig:
    FLAGS.unparse_flags()
    main_lib._parse_flags(["tltrain", *args])
    return main_lib.config_from_flags()


def error_of(*args: str) -> str:
    """The message main exits with for these arguments (flags and files), checked to be one line."""
    FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as exit_info:
        main_lib.main(main_lib._parse_flags(["tltrain", *args]))
    message = str(exit_info.value.code)
    assert message.startswith("tltrain: ") and "\n" not in message, message
    return message


@pytest.fixture(autouse=True)
def reset_flags():
    yield
    FLAGS.unparse_flags()


def test_every_config_field_has_a_flag_of_the_same_name():
    config = RunConfig()
    for section in dataclasses.fields(config):
        for field in dataclasses.fields(getattr(config, section.name)):
            name = fields.flag_name(field)
            assert name in FLAGS, f"{section.name}.{field.name} has no --{name}"
    assert "augment" in FLAGS and "preset" not in FLAGS
    for name, setting in config_lib.settings().items():  # help and choices come from the declaration
        assert FLAGS[name].help.endswith(setting.field.metadata["help"]), name
    assert FLAGS["fill_mode"].parser.enum_values == ["nearest", "reflect"]


def test_defaults_give_the_default_config():
    cfg = parse()
    assert cfg.train == RunConfig().train
    assert cfg.model == RunConfig().model
    assert cfg.data == dataclasses.replace(RunConfig().data, seed=0)  # --seed seeds every section


def test_flags_and_flagfile_fill_the_config_and_it_round_trips_through_json(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--model=simple_cnn\n--head_units=64,32\n--crop_area_range=0.5,1\n--augment=seed_recipe\n")
    cfg = parse(f"--flagfile={flagfile}", "--batch_size=8", "--seed=7", "--profile_steps=3,5", "--export_tflite")
    assert (cfg.model.model, cfg.model.head_units, cfg.data.crop_area_range) == ("simple_cnn", (64, 32), (0.5, 1.0))
    assert (cfg.augment.preset, cfg.data.batch_size, cfg.train.profile_steps) == ("seed_recipe", 8, (3, 5))
    assert cfg.train.seed == cfg.data.seed == cfg.augment.seed == 7
    assert cfg.export.export_tflite == ("float32",)  # a bare --export_tflite keeps its old meaning
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_model_list_prints_the_registry(capsys):
    FLAGS.unparse_flags()
    main_lib.main(main_lib._parse_flags(["tltrain", "--model=list"]))
    listing = capsys.readouterr().out
    for name in ("mobilenet_v2", "efficientnet_b0", "resnet50", "simple_cnn"):
        assert name in listing


def test_malformed_flag_values_are_one_line_errors():
    assert "--optimizer=rmsprob" in error_of("--optimizer=rmsprob")
    assert "--head_units" in error_of("--head_units=64,lots")
    assert "--crop_area_range=0.5: needs 2 comma-separated values" in error_of("--crop_area_range=0.5")
    assert "--batch_size" in error_of("--batch_size=big")


def test_bad_flags_fail_before_any_model_is_built(tmp_path, color_records):
    base = [f"--records_dir={color_records}", f"--model_dir={tmp_path / 'run'}", "--weights=none"]
    assert "--model_dir: required" in error_of(f"--records_dir={color_records}")
    assert "resnet_9000" in error_of(*base, "--model=resnet_9000")
    assert "--image_size=16 is too small for mobilenet_v2" in error_of(*base, "--model=mobilenet_v2", "--image_size=16")
    missing = tmp_path / "no_records"
    assert f"{missing}/dataset.json" in error_of(*base[1:], f"--records_dir={missing}", "--model=simple_cnn")
    assert "--num_classes=5: the records have 3 classes" in error_of(*base, "--model=simple_cnn", "--num_classes=5")
    assert "--fine_tune_epochs: needs --freeze=backbone" in error_of(
        *base, "--model=simple_cnn", "--freeze=none", "--fine_tune_epochs=1")
    assert "unknown --fine_tune_at=block_99 for mobilenet_v2" in error_of(
        *base, "--model=mobilenet_v2", "--alpha=0.35", "--image_size=32", "--fine_tune_epochs=1",
        "--fine_tune_at=block_99")
    assert "unexpected arguments photo.jpg" in error_of(*base, "--model=simple_cnn", "photo.jpg")
    assert "cannot read local files" in error_of(*base, "--model=simple_cnn", "--strategy=tpu", "--tpu=my-tpu")
    assert not (tmp_path / "run").exists()  # nothing was written


def test_resuming_with_another_model_or_image_size_is_a_one_line_error(tmp_path, color_records):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    earlier = RunConfig()
    earlier.model.model, earlier.data.image_size = "simple_cnn", 32
    (model_dir / "config.json").write_text(earlier.to_json())
    (model_dir / "labels.txt").write_text("red\ngreen\nblue\n")
    # The earlier run's head (linear, the default) is given, so the plan's choice of head does not differ first.
    base = [f"--records_dir={color_records}", f"--model_dir={model_dir}", "--weights=none", "--head_units="]
    message = error_of(*base, "--model=mobilenet_v2", "--alpha=0.35", "--image_size=32")
    assert "holds a run with model=simple_cnn, this one has model=mobilenet_v2" in message
    assert "image_size=32, this one has image_size=48" in error_of(*base, "--model=simple_cnn", "--image_size=48")
    (model_dir / "labels.txt").write_text("cat\ndog\nfish\n")
    assert "classes=cat,dog,fish" in error_of(*base, "--model=simple_cnn", "--image_size=32")


def test_resuming_mid_execution_with_another_steps_per_execution_is_a_one_line_error(tmp_path, color_records):
    import tensorflow as tf

    progress = tf.train.Checkpoint(phase_step=tf.Variable(3, dtype=tf.int64))
    tf.train.CheckpointManager(progress, str(tmp_path / "run" / "checkpoints"), max_to_keep=1).save(checkpoint_number=3)
    message = error_of(f"--records_dir={color_records}", f"--model_dir={tmp_path / 'run'}", "--weights=none",
                       "--model=simple_cnn", "--image_size=32", "--steps_per_execution=2")
    assert "--steps_per_execution=2:" in message and "at step 3 of its phase, not a multiple of it" in message


def test_other_modes_need_a_trained_model_dir(tmp_path):
    for mode in ("evaluate", "export", "predict"):
        assert "no config.json/labels.txt; train a model there first" in error_of(
            f"--mode={mode}", f"--model_dir={tmp_path}")


def test_files_where_directories_belong_and_corrupt_files_are_one_line_errors_before_building(tmp_path, color_records):
    """--weights naming a text file, --model_dir or --export_dir naming a file, a corrupt config.json, and a
    tf.data service nobody serves: each one line naming the file, flag or address, before any model is built."""
    import socket

    base = [f"--records_dir={color_records}", "--model=simple_cnn", "--image_size=32"]
    notes = tmp_path / "notes.weights.h5"
    notes.write_text("these are not weights")
    run = tmp_path / "run"
    assert f"--weights={notes}: neither an HDF5 file nor a .keras archive" in error_of(
        *base, f"--model_dir={run}", "--model=mobilenet_v2", "--alpha=0.35", f"--weights={notes}")
    assert f"--weights={tmp_path}: cannot be read" in error_of(
        *base, f"--model_dir={run}", "--model=mobilenet_v2", "--alpha=0.35", f"--weights={tmp_path}")
    for mode in ("train", "evaluate", "export", "predict"):
        assert f"--model_dir={notes}: is a file" in error_of(*base, "--weights=none", f"--mode={mode}",
                                                             f"--model_dir={notes}")
    assert not run.exists()

    run.mkdir()
    (run / "config.json").write_text('{"model": {"model": "simple_cnn"')  # cut short
    (run / "labels.txt").write_text("red\ngreen\nblue\n")
    for mode in ("train", "evaluate", "export"):
        assert f"{run / 'config.json'}: not a tltrain config" in error_of(*base, "--weights=none", f"--mode={mode}",
                                                                         f"--model_dir={run}")
    (run / "config.json").write_text(RunConfig().to_json())
    import tensorflow as tf

    tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), str(run / "checkpoints"), 1).save()
    assert f"--export_dir={notes}: is a file" in error_of("--mode=export", f"--model_dir={run}",
                                                          f"--export_dir={notes}")

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = error_of(*base, "--weights=none", f"--model_dir={tmp_path / 'other'}",
                       f"--data_service=grpc://127.0.0.1:{port}", "--data_service_timeout=1")
    assert f"--data_service=grpc://127.0.0.1:{port}: no tf.data service dispatcher reachable within" in message
    assert "--data_service_timeout=0.0: must be > 0" in error_of(
        *base, "--weights=none", f"--model_dir={tmp_path / 'other'}", f"--data_service=grpc://127.0.0.1:{port}",
        "--data_service_timeout=0")


def test_a_failed_checkpoint_write_is_one_line_and_a_rerun_resumes_from_the_last_good_one(tmp_path, color_records, capsys):
    """The write of ckpt-3 fails (a file stands where SaveV2 makes its temporary directory, as a full disk
    would fail it): main exits with one line naming the checkpoint and the one a re-run resumes from; the
    re-run (the obstacle gone) resumes there and finishes."""
    import tensorflow as tf

    model_dir = tmp_path / "run"
    args = [f"--records_dir={color_records}", f"--model_dir={model_dir}", "--model=simple_cnn", "--weights=none",
            "--image_size=32", "--batch_size=16", "--freeze=none", "--epochs=1", "--steps_per_epoch=4",
            "--checkpoint_steps=1", "--validation_split="]
    (model_dir / "checkpoints").mkdir(parents=True)
    obstacle = model_dir / "checkpoints" / "ckpt-3_temp"
    obstacle.write_text("in the way")
    message = error_of(*args)
    assert f"{model_dir}/checkpoints: writing checkpoint ckpt-3 failed (" in message
    assert f"a re-run resumes from {model_dir}/checkpoints/ckpt-2" in message
    obstacle.unlink()
    capsys.readouterr()
    FLAGS.unparse_flags()
    main_lib.main(main_lib._parse_flags(["tltrain", *args]))
    out = capsys.readouterr().out
    assert f"resumed from {model_dir}/checkpoints/ckpt-2" in out and "done at step 4" in out
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-4")


@pytest.mark.slow
def test_command_line_errors_are_one_line_without_traceback(tmp_path, color_records):
    """In a fresh process (devices split before TensorFlow starts): batch size vs replicas, and no TPU."""
    base = [sys.executable, "-m", "tltrain.main", f"--records_dir={color_records}", f"--model_dir={tmp_path / 'run'}",
            "--model=simple_cnn", "--weights=none"]
    cases = {
        "--batch_size=15: not divisible by the 2 replicas": ["--strategy=mirrored", "--num_cpu_devices=2",
                                                              "--batch_size=15"],
        "--strategy=tpu --tpu=local: no TPU reachable": ["--strategy=tpu", "--tpu=local"],
    }
    for expected, args in cases.items():
        process = subprocess.run(base + args, capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert process.returncode != 0
        assert "Traceback" not in process.stderr
        errors = [line for line in process.stderr.splitlines() if line.startswith("tltrain:")]
        assert len(errors) == 1 and expected in errors[0], process.stderr[-2000:]
