"""The training loop: it learns, phases freeze the right layers, SIGKILL + re-run resumes to the same end,
mixed precision works, and the schedule/weights/stop rules do what they say (distribution: test_train_distributed)."""

import dataclasses
import os
import logging
import io
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tltrain import checkpoints, keep, model_dir_lock, models, reporting, run_dir, train
from tltrain import strategy as strategy_lib
from tltrain.config import RunConfig


def small_config(records, model_dir, **train_fields) -> RunConfig:
    """simple_cnn at 32 px, batch 16, no pretrained weights: seconds per epoch on 2 cores."""
    cfg = RunConfig()
    cfg.data = dataclasses.replace(cfg.data, records_dir=str(records), image_size=32, batch_size=16)
    cfg.model = dataclasses.replace(cfg.model, model="simple_cnn", weights="none")
    fields = dict(model_dir=str(model_dir), mixed_precision="none")  # float32 unless asked: numbers compare alike
    cfg.train = dataclasses.replace(cfg.train, **{**fields, **train_fields})
    return cfg


def test_schedule_warms_up_then_decays_per_phase():
    cosine = train.PhaseSchedule(0.1, total_steps=110, warmup_steps=10, kind="cosine")
    values = [float(cosine(step)) for step in (0, 4, 9, 10, 60, 110, 200)]
    assert values[0] == pytest.approx(0.01) and values[1] == pytest.approx(0.05)
    assert values[2] == pytest.approx(0.1) and values[3] == pytest.approx(0.1)
    assert values[4] == pytest.approx(0.05) and values[5] == pytest.approx(0.0, abs=1e-9) and values[6] == values[5]
    step = train.PhaseSchedule(1.0, total_steps=100, warmup_steps=0, kind="step")
    assert [float(step(s)) for s in (0, 49, 50, 75, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    assert float(train.PhaseSchedule(0.5, 100, 0, "constant")(99)) == 0.5


def test_phases_follow_the_flags():
    cfg = RunConfig()
    cfg.train = dataclasses.replace(cfg.train, epochs=2, fine_tune_epochs=3, learning_rate=0.01)
    assert train.plan_phases(cfg, replicas=1) == [train.Phase("transfer", 2, 0.01), train.Phase("fine_tune", 3, 0.001)]
    cfg.train = dataclasses.replace(cfg.train, scale_learning_rate="linear", fine_tune_learning_rate=0.002)
    assert train.plan_phases(cfg, replicas=4) == [train.Phase("transfer", 2, 0.04), train.Phase("fine_tune", 3, 0.008)]
    cfg.train = dataclasses.replace(cfg.train, freeze="none", fine_tune_epochs=0, scale_learning_rate="none")
    assert train.plan_phases(cfg, replicas=1) == [train.Phase("full", 2, 0.01)]


def test_precision_follows_the_flag_and_auto_picks_the_accelerators_fast_type():
    default = tf.distribute.get_strategy()
    assert strategy_lib.resolve_precision("bfloat16", default) == "mixed_bfloat16"  # on any device, when asked
    assert strategy_lib.resolve_precision("float16", default) == "mixed_float16"
    assert strategy_lib.resolve_precision("none", default) == "float32"
    assert strategy_lib.auto_precision("TPU") == "mixed_bfloat16"
    assert strategy_lib.auto_precision("GPU", (8, 0)) == strategy_lib.auto_precision("GPU", (7, 0)) == "mixed_float16"
    assert strategy_lib.auto_precision("GPU", (6, 1)) == strategy_lib.auto_precision("GPU", None) == "float32"
    assert strategy_lib.auto_precision("CPU") == "float32"  # whatever the CPU's bf16 instructions
    if not tf.config.list_physical_devices("GPU"):
        assert strategy_lib.resolve_precision("auto", default) == "float32"
    with pytest.raises(ValueError, match="--mixed_precision=fp8: expected auto, float16, bfloat16, none"):
        strategy_lib.resolve_precision("fp8", default)


def test_balanced_class_weights_come_from_the_training_counts(tmp_path, color_records):
    cfg = small_config(color_records, tmp_path / "run", class_weight="balanced")
    job = train.prepare(cfg)
    job.class_counts = [10, 30, 0]
    assert train._class_weights(job).numpy() == pytest.approx([4 / 3, 4 / 9, 0.0])


PRECISIONS = ("none", "bfloat16")  # float32 and mixed_bfloat16, asked for: both run on any CPU


@pytest.fixture(scope="module")
def runs_by_precision(tmp_path_factory, color_records):
    """The same 5-epoch job trained in float32 and in mixed_bfloat16, with progress lines as often as possible:
    {flag value: (config, job, result, what it printed)}."""
    runs = {}
    for precision in PRECISIONS:
        cfg = small_config(color_records, tmp_path_factory.mktemp(precision) / "run", freeze="none", epochs=5,
                           learning_rate=3e-3, mixed_precision=precision, progress_seconds=1e-6)
        job = train.prepare(cfg)
        printed = io.StringIO()
        handler = logging.StreamHandler(printed)
        logger = logging.getLogger("tltrain")
        level, logger.level = logger.level, logging.INFO
        logger.addHandler(handler)
        try:
            result = train.train(job)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        runs[precision] = cfg, job, result, printed.getvalue()
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_loss_falls_and_accuracy_ends_well_above_chance(runs_by_precision, precision):
    """Also what the run reports: metrics.jsonl holds every epoch and evaluation as the history does, and with
    output that is not a terminal, progress lines inside every epoch and evaluation (--progress_seconds)."""
    cfg, _, result, out = runs_by_precision[precision]
    model_dir = pathlib.Path(cfg.train.model_dir)
    history = result["history"]
    assert result["step"] == 5 * 6 and len(history) == 5
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert history[-1]["val_accuracy"] >= 0.8  # chance is 1/3
    assert 0.0 <= history[-1]["input_wait_share"] <= 1.0 and history[-1]["images_per_second"] > 0
    assert (model_dir / "config.json").exists() and (model_dir / "labels.txt").read_text() == "red\ngreen\nblue\n"

    records = reporting.read_metrics(str(model_dir))
    assert [(r["event"], r["epoch"], r["step"]) for r in records] == \
        [(event, epoch, 6 * epoch) for epoch in range(1, 6) for event in ("epoch", "evaluation")]
    logged_history = reporting.epoch_history(records)
    for logged, returned in zip(logged_history, history):
        assert logged == pytest.approx({**logged, **returned}) and logged["seconds"] > 0 and logged["epochs"] == 5
    learning_rates = [epoch["learning_rate"] for epoch in logged_history]  # cosine decay to 0 over the phase
    assert 0 < learning_rates[0] < 3e-3 and learning_rates == sorted(learning_rates, reverse=True)
    assert learning_rates[-1] == 0
    assert all(r["count"] == 36 and r["split"] == "validation" for r in records if r["event"] == "evaluation")

    for epoch in range(1, 6):  # 6 steps, 3 validation batches: a line after each but the last
        for step in range(1, 6):
            assert re.search(rf"^\[full\] step {step}/6 of epoch {epoch}/5 - loss \d+\.\d{{4}} - img/s [\d.]+ - "
                             r"ETA \d+:\d\d$", out, re.MULTILINE), out
    assert out.count("[full] validation step 2/3 - ETA ") == 5 and "step 6/6" not in out


@pytest.mark.slow
def test_bfloat16_computes_in_bfloat16_and_learns_as_well_as_float32(runs_by_precision):
    """mixed_bfloat16: the layers compute in bfloat16 (the policy does not leak out of the build), the
    probabilities come out in float32, and the colour classes are learned as in float32: validation accuracy
    within 4 of the 36 validation images (loss and metrics are float32 in both)."""
    _, job, bf16, _ = runs_by_precision["bfloat16"]
    assert job.precision == "mixed_bfloat16" and runs_by_precision["none"][1].precision == "float32"
    model = run_dir.build_model(job.cfg, 3, job.precision)
    assert model.get_layer("backbone").compute_dtype == "bfloat16" and model.output.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # not leaked
    f32 = runs_by_precision["none"][2]
    assert bf16["history"][-1]["val_accuracy"] >= f32["history"][-1]["val_accuracy"] - 4 / 36
    assert bf16["history"][-1]["loss"] < 0.8 * bf16["history"][0]["loss"]


@pytest.mark.slow
def test_transfer_freezes_the_backbone_and_fine_tune_only_its_top_with_batchnorm_frozen(tmp_path, color_records):
    """MobileNetV2 (alpha 0.35) from a weights file: phase 1 leaves the whole backbone (BatchNorm statistics
    included) untouched; phase 2 trains only layers from fine_tune_at on and still leaves BatchNorm alone."""
    weights = tmp_path / "backbone.weights.h5"
    model_cfg = dataclasses.replace(RunConfig().model, model="mobilenet_v2", alpha=0.35, weights="none")
    models.build_classifier(model_cfg, 3, 32).get_layer("backbone").save_weights(weights)
    cfg = small_config(color_records, tmp_path / "run", epochs=1, steps_per_epoch=2, learning_rate=0.01,
                       fine_tune_at="block_15_expand")
    cfg.model = dataclasses.replace(model_cfg, weights=str(weights))
    cfg.train = dataclasses.replace(cfg.train, fine_tune_epochs=1, fine_tune_learning_rate=0.01, validation_steps=1)
    start = models.build_classifier(cfg.model, 3, 32).get_layer("backbone")
    train.train(train.prepare(cfg))

    def backbone_at(step):
        model = run_dir.build_model(cfg, 3, "float32", weights="none")
        path = str(tmp_path / "run" / "checkpoints" / f"ckpt-{step}")
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        return model.get_layer("backbone")

    for before, after in zip(start.weights, backbone_at(2).weights):  # the end of phase 1
        np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=before.path)
    cut = [layer.name for layer in start.layers].index("block_15_expand")
    for index, (before, after) in enumerate(zip(start.layers, backbone_at(4).layers)):  # the end of phase 2
        for w_before, w_after in zip(before.weights, after.weights):
            same = np.array_equal(w_before.numpy(), w_after.numpy())
            frozen = index < cut or isinstance(before, keras.layers.BatchNormalization)
            assert same == frozen, f"{before.name}/{w_before.name}: changed={not same}, layer {index}, cut {cut}"


@pytest.mark.slow
def test_stop_at_accuracy_ends_the_run_and_a_rerun_does_nothing(tmp_path, color_records, tltrain_log):
    cfg = small_config(color_records, tmp_path / "run", freeze="none", epochs=3, stop_at_accuracy=0.01)
    first = train.train(train.prepare(cfg))
    assert first["stopped_early"] and first["step"] == 6 and len(first["history"]) == 1
    again = train.train(train.prepare(cfg))
    assert again["step"] == 6 and again["history"] == []
    assert "run already stopped early" in tltrain_log.read()


def _main(*args):
    return [sys.executable, "-m", "tltrain.main", *args]


@pytest.mark.slow
def test_sigkill_during_fine_tuning_then_rerun_ends_at_the_same_step(tmp_path, color_records):
    """Killed mid phase 2 (after a --checkpoint_steps save), the same command resumes in phase 2 at the saved
    step and ends at the final step of an uninterrupted run: 1 + 3 epochs of 4 steps = 16, with the fine-tune
    optimizer at 12 iterations (the learning rate schedule's position)."""
    model_dir = tmp_path / "run"
    command = _main(f"--records_dir={color_records}", f"--model_dir={model_dir}", "--model=simple_cnn",
                    "--weights=none", "--image_size=32", "--batch_size=16", "--epochs=1", "--fine_tune_epochs=3",
                    "--steps_per_epoch=4", "--validation_steps=1", "--steps_per_execution=2",
                    "--checkpoint_steps=2", "--seed=3")
    checkpoints = model_dir / "checkpoints"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    killed_after = None
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        latest = tf.train.latest_checkpoint(str(checkpoints))
        step = int(latest.rsplit("-", 1)[1]) if latest else 0
        if 4 < step < 14:
            os.kill(process.pid, signal.SIGKILL)
            killed_after = step
            break
        time.sleep(0.05)
    process.wait()
    assert killed_after is not None, "the run ended before it could be killed in phase 2"
    config_before = (model_dir / "config.json").read_text()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stdout and "[transfer]" not in rerun.stdout
    assert "done at step 16" in rerun.stdout
    assert (model_dir / "config.json").read_text() == config_before
    final = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(checkpoints)))
    assert final.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 16
    assert final.get_tensor("phase/.ATTRIBUTES/VARIABLE_VALUE") == 1
    assert final.get_tensor("optimizer_fine_tune/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 12
    assert final.get_tensor("optimizer_transfer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 4
    # metrics.jsonl: the killed run's records up to its checkpoint, then the resumed run's, each epoch once
    records = reporting.read_metrics(str(model_dir))
    epochs = [(r["phase"], r["epoch"], r["step"]) for r in records if r["event"] == "epoch"]
    assert epochs == [("transfer", 1, 4), ("fine_tune", 1, 8), ("fine_tune", 2, 12), ("fine_tune", 3, 16)]


@pytest.mark.slow
def test_training_through_an_in_process_tf_data_service_learns(tmp_path, color_records, tf_data_service):
    """--data_service: the host pipeline runs in a tf.data service worker (127.0.0.1 only) and the run still learns."""
    cfg = small_config(color_records, tmp_path / "run", freeze="none", epochs=5, learning_rate=3e-3)
    cfg.data = dataclasses.replace(cfg.data, data_service=tf_data_service)
    history = train.train(train.prepare(cfg))["history"]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert history[-1]["val_accuracy"] >= 0.8  # chance is 1/3


HOLD_LOCK = """
import sys, time
from tltrain import model_dir_lock
with model_dir_lock.exclusive(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_run_on_a_model_dir_refuses_and_a_killed_holder_does_not_block(tmp_path, color_records):
    """While another process holds model_dir's lock (what a training run takes), a run refuses in one line naming
    the holder's pid before writing anything; once the holder is killed with SIGKILL the same run trains, and
    releases the lock when it ends."""
    model_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(model_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        job = train.prepare(small_config(color_records, model_dir, freeze="none", epochs=1, steps_per_epoch=2))
        with pytest.raises(model_dir_lock.ModelDirInUse) as refused:
            train.train(job)
        message = str(refused.value)
        assert f"--model_dir={model_dir}: another training run is writing there (pid {holder.pid} on" in message
        assert "\n" not in message and sorted(p.name for p in model_dir.iterdir()) == ["train.lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert train.train(job)["step"] == 2
    with model_dir_lock.exclusive(str(model_dir)):  # released at the end of the run
        pass


def test_the_lease_lock_of_object_stores_refuses_a_live_holder_and_takes_over_a_dead_or_silent_one(tmp_path):
    """A URL model_dir (file:// standing in for gs://) gets the lease file: a second holder refuses while the first
    holds it; the lease goes away with its holder; a lease whose holder's process is gone (same host) or that
    was not renewed for LEASE_EXPIRY_S (other host) is taken over; another host's fresh lease is respected."""
    import json
    import socket
    import time

    model_dir = f"file://{tmp_path / 'run'}"
    lock_file = tmp_path / "run" / model_dir_lock.LOCK_FILE
    with model_dir_lock.exclusive(model_dir):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(model_dir_lock.ModelDirInUse, match=f"another training run is writing there .pid {os.getpid()}"):
            with model_dir_lock.exclusive(model_dir):
                pass
    assert not lock_file.exists()
    dead_pid = subprocess.Popen([sys.executable, "-c", ""])  # a pid that no longer runs
    dead_pid.wait()
    other_host = "not-" + socket.gethostname()
    for holder, renewed_ago, taken in ((socket.gethostname(), 0, True), (other_host, 0, False),
                                       (other_host, model_dir_lock.LEASE_EXPIRY_S + 1, True)):
        lock_file.write_text(json.dumps({"host": holder, "pid": dead_pid.pid, "renewed": time.time() - renewed_ago}))
        if taken:
            with model_dir_lock.exclusive(model_dir):
                pass
        else:
            with pytest.raises(model_dir_lock.ModelDirInUse, match=f"pid {dead_pid.pid} on {other_host}"):
                with model_dir_lock.exclusive(model_dir):
                    pass


def test_a_truncated_latest_checkpoint_falls_back_to_the_newest_that_reads(tmp_path, color_records, tltrain_log):
    """ckpt-3's data file cut in half: the re-run says so, resumes from ckpt-2 and ends where it should;
    evaluate/export/predict's load_trained falls back the same way."""
    model_dir = tmp_path / "run"
    cfg = small_config(color_records, model_dir, freeze="none", epochs=1, steps_per_epoch=3, checkpoint_steps=1)
    cfg.data.validation_split = ""

    def steps() -> list[int]:
        return sorted(int(path.rsplit("-", 1)[1]) for path in checkpoints.newest_first(str(model_dir / "checkpoints")))

    train.train(train.prepare(cfg))
    assert steps() == [1, 2, 3]
    (data_file,) = (model_dir / "checkpoints").glob("ckpt-3.data-*")
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    tltrain_log.read()

    cfg.train.epochs = 2
    assert train.train(train.prepare(cfg))["step"] == 6
    out = tltrain_log.read()
    newest = f"{model_dir}/checkpoints/ckpt-3: cannot be read (Read less bytes than requested); trying the checkpoint"
    assert newest in out
    assert f"resumed from {model_dir}/checkpoints/ckpt-2\n" in out
    assert steps() == [4, 5, 6]

    shutil.rmtree(model_dir / keep.BEST_DIR)  # without kept weights load_trained reads checkpoints/
    for path in (model_dir / "checkpoints").glob("ckpt-6.*"):  # a truncated index: the same fallback
        path.write_bytes(path.read_bytes()[:10])
    run_dir.load_trained(str(model_dir))
    assert f"restored {model_dir}/checkpoints/ckpt-5, the newest checkpoint that reads" in tltrain_log.read()
