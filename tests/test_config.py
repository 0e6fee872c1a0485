"""config: every setting declared once (type, choices, help, range), checked by one validate() that the command
line and the Python API both go through; old config.json files still read; the Python API and its README."""

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import tltrain
from tltrain import config, fields
from tltrain import main as main_lib

from test_main import error_of as cli_error  # the one line `python -m tltrain.main` exits with, in this process

FLAGS = main_lib.FLAGS


@pytest.fixture(autouse=True)
def reset_flags():
    yield
    FLAGS.unparse_flags()


def numeric_settings() -> dict[str, config.Setting]:
    return {name: s for name, s in config.settings().items() if fields.scalar_type(s.hint) in (int, float)
            and not fields.choices(s.hint)}


def out_of_range(setting: config.Setting) -> list:
    """A value just outside each bound of a setting (a tuple setting gets it in every position)."""
    kind = fields.scalar_type(setting.hint)
    step = 1 if kind is int else 1e-3
    values = []
    for key, bound in setting.field.metadata["bounds"].items():
        values.append({"ge": bound - step, "gt": bound, "le": bound + step, "lt": bound}[key])
    values = [kind(v) for v in values]
    args = fields.tuple_args(setting.hint)
    if args is not None:
        values = [(v,) * (1 if Ellipsis in args else len(args)) for v in values]
    return values


def test_every_numeric_setting_declares_its_range_and_refuses_values_outside_it():
    """Generic: each int/float setting has bounds; just outside each one is a one-line error naming the flag on
    the command line and the argument from Python, and the defaults are inside."""
    config.RunConfig().validate()
    config.from_settings()
    numeric = numeric_settings()
    assert {"batch_size", "steps_per_epoch", "top_k", "dropout", "crop_area_range", "alpha"} <= set(numeric)
    for name, setting in numeric.items():
        assert setting.field.metadata["bounds"], f"{name}: no range declared"
        for bad in out_of_range(setting):
            shown = fields.show(bad)
            with pytest.raises(ValueError, match=rf"^--{name}={re.escape(shown)}: must be ") as error:
                config.from_settings(**{name: bad})
            assert "\n" not in str(error.value)
            assert cli_error(f"--{name}={shown}") == f"tltrain: {error.value}"
            with pytest.raises(ValueError, match=rf"^{name}={re.escape(shown)}: must be "):
                tltrain.predict("unused", "unused.jpg", **{name: bad}) if name == "top_k" else tltrain.fit(
                    "unused", "unused", **{name: bad})


@pytest.mark.parametrize("flag, value, expected", [
    ("steps_per_epoch", -1, "must be >= 0"),  # trained nothing and exited 0
    ("validation_steps", -1, "must be >= 0"),  # reported val_accuracy 0.0000
    ("epochs", -1, "must be >= 0"),  # with --fine_tune_epochs=1: ran without a word
    ("top_k", -1, "must be >= 1"),  # printed 2 of 3 classes
    ("batch_size", 0, "must be >= 1"),
    ("learning_rate", 0.0, "must be > 0"),
    ("fine_tune_learning_rate", -1e-3, "must be >= 0"),
    ("dropout", 1.0, "must be in [0, 1)"),
    ("label_smoothing", 1.0, "must be in [0, 1)"),
    ("alpha", 0.0, "must be > 0"),
    ("crop_area_range", (0.0, 1.0), "must be in (0, 1] (each value)"),
    ("crop_area_range", (0.9, 0.5), "must not decrease"),
    ("crop_aspect_range", (-1.0, 1.0), "must be > 0 (each value)"),
    ("eval_crop_fraction", 1.5, "must be in (0, 1]"),
    ("stop_at_accuracy", 2.0, "must be in [0, 1]"),
    ("profile_steps", (5, 3), "must be increasing"),
    ("max_seconds", -1.0, "must be >= 0"),
])
def test_invalid_numbers_are_one_line_errors_naming_the_flag_or_the_argument(tmp_path, color_records, flag, value,
                                                                              expected):
    shown = fields.show(value)
    cli = cli_error(f"--records_dir={color_records}", f"--model_dir={tmp_path / 'run'}", "--model=simple_cnn",
                    "--weights=none", "--fine_tune_epochs=1", f"--{flag}={shown}")
    assert cli == f"tltrain: --{flag}={shown}: {expected}"
    with pytest.raises(ValueError) as error:
        if flag == "top_k":
            tltrain.predict(str(tmp_path / "run"), str(tmp_path), top_k=value)
        else:
            tltrain.fit(str(color_records), str(tmp_path / "run"), model="simple_cnn", weights="none",
                        fine_tune_epochs=1, **{flag: value})
    assert str(error.value) == f"{flag}={shown}: {expected}"
    assert not (tmp_path / "run").exists()  # refused before anything was built or written


def test_predict_command_refuses_a_bad_top_k_in_one_line(tmp_path):
    process = subprocess.run([sys.executable, "-m", "tltrain.predict", f"--model_dir={tmp_path}", "--top_k=-1",
                              "x.jpg"], capture_output=True, text=True, timeout=120)
    assert process.returncode != 0 and "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines()[-1] == "tltrain.predict: --top_k=-1: must be >= 1"


def test_closed_sets_of_values_are_literal_types_checked_up_front():
    """fill_mode and data_service_mode are checked before any pipeline is built, like every choice, and the
    modules' lists of names are the Literal's."""
    from tltrain import augment, data_service, strategy

    assert tuple(augment.PRESETS) == fields.choices(config.Preset)
    assert augment.FILL_MODES == fields.choices(config.FillMode)
    assert data_service.DATA_SERVICE_MODES == fields.choices(config.DataServiceMode)
    assert strategy.STRATEGIES == fields.choices(config.Strategy)
    for flag, value in (("fill_mode", "wrap"), ("data_service_mode", "epochs"), ("augment", "heavy")):
        with pytest.raises(ValueError, match=rf"^--{flag}={value}: must be one of "):
            config.from_settings(**{flag: value})
        assert f"--{flag}={value}: value should be one of" in cli_error(f"--{flag}={value}")
    with pytest.raises(TypeError, match="unknown setting 'fine_tune_epoch'; did you mean fine_tune_epochs"):
        tltrain.fit("records", "run", fine_tune_epoch=2)
    with pytest.raises(ValueError, match="^batch_size=2.5: must be an integer$"):
        tltrain.fit("records", "run", batch_size=2.5)


def test_export_to_a_file_is_one_line_from_the_command_line_and_from_python(tmp_path):
    """--mode=export reads its settings from the export section: an --export_dir that is a file is refused
    before anything is built (a model_dir with a config, labels and a checkpoint, no model needed for that)."""
    import tensorflow as tf

    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(config.RunConfig().to_json())
    (model_dir / "labels.txt").write_text("red\ngreen\nblue\n")
    tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), str(model_dir / "checkpoints"),
                               max_to_keep=1).save(checkpoint_number=1)
    target = tmp_path / "export.txt"
    target.write_text("not a folder")
    assert cli_error("--mode=export", f"--model_dir={model_dir}", f"--export_dir={target}") == \
        f"tltrain: --export_dir={target}: is a file; it must be a directory (or not exist yet)"
    with pytest.raises(ValueError, match=f"^export_dir={re.escape(str(target))}: is a file"):
        tltrain.export(str(model_dir), str(target))


def test_a_config_json_of_an_older_run_still_reads():
    """Before evaluate, export and predict had their own sections, their settings were under train."""
    old = json.loads(config.RunConfig().to_json())
    for section in ("evaluate", "export", "predict"):
        old["train"].update(old.pop(section))
    old["train"].update(eval_split="test", export_dir="gs://b/e", export_tflite=True, top_k=3, retired_flag=1)
    old["data"]["crop_area_range"] = [0.5, 1.0]
    cfg = config.RunConfig.from_json(json.dumps(old))
    assert (cfg.evaluate.eval_split, cfg.export.export_dir, cfg.export.export_tflite, cfg.predict.top_k) == (
        "test", "gs://b/e", True, 3)
    assert cfg.data.crop_area_range == (0.5, 1.0)
    assert cfg == dataclasses.replace(cfg).validate()
    assert config.RunConfig.from_json(cfg.to_json()) == cfg


def test_the_api_loads_lazily_without_tensorflow_and_its_modules_stay_modules():
    code = ("import sys, tltrain; fit = tltrain.fit; tltrain.log_to_console(); "
            "import tltrain.config, tltrain.records; print('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip() == "False"
    import tltrain.evaluate as evaluate_module

    assert tltrain.evaluate is evaluate_module is sys.modules["tltrain.evaluate"]
    assert callable(tltrain.evaluate) and callable(tltrain.export) and callable(tltrain.predict)
    assert callable(evaluate_module.make_evaluator)  # still the module of --mode=evaluate


def readme_python_api(repo_root) -> str:
    readme = (repo_root / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_python_api_section_runs_as_written(tmp_path, color_records, repo_root):
    """The README's code, unchanged, on tiny records: it trains, evaluates, exports and predicts, and shows the
    same per-epoch lines as the command line."""
    shutil.copytree(color_records, tmp_path / "records")
    from PIL import Image

    Image.new("RGB", (48, 40), (200, 30, 30)).save(tmp_path / "photo.jpg")
    code = readme_python_api(repo_root)
    process = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert process.returncode == 0, process.stderr[-3000:]
    lines = process.stdout.splitlines()
    assert [line for line in lines if line.startswith("[transfer] epoch 2/2 (step 6)") and "val_accuracy" in line]
    assert "[transfer] epoch" not in process.stderr  # each line shown once, on stdout
    predicted = ast.literal_eval(lines[-1])  # the dict printed last
    assert list(predicted) == ["photo.jpg"] and len(predicted["photo.jpg"]) == 2
    assert predicted["photo.jpg"][0][0] in ("red", "green", "blue")
    run = tmp_path / "runs" / "notebook"
    assert (run / "evaluation.json").exists() and (run / "export" / "saved_model" / "saved_model.pb").exists()
