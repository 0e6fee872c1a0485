"""Distribution: the same loop under MirroredStrategy on 2 logical CPUs trains, and a 2-replica step matches a
one-device step with the same global batch (loss, metrics and weights), so the loss reduction is right."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

# Runs in a fresh process: the CPU must be split into 2 logical devices before TensorFlow initialises them.
# Three executions of 2 steps on the same fixed global batch of 8, split 4+4 over the two replicas; the backbone is
# frozen (BatchNorm in inference mode, so per-replica batch statistics play no part), with class weights, label
# smoothing and L2 regularisation all in the loss. Once in float32 and once in mixed_bfloat16 (the cheap place to
# check that the cross-replica reduction holds in bfloat16 too: one process, no second TensorFlow start).
MATCH_SCRIPT = """
import itertools
import json
import numpy as np
import tensorflow as tf
from tltrain import steps, strategy as strategy_lib, train
from tltrain.job import Job, Phase
from tltrain.config import RunConfig, StrategyConfig

strategy_lib.configure_cpu_devices(2)
cfg = RunConfig()
cfg.data.image_size, cfg.data.batch_size = 32, 8
cfg.model.model, cfg.model.weights, cfg.model.dropout, cfg.model.l2 = "simple_cnn", "none", 0.0, 0.01
cfg.augment.preset = "none"
cfg.train.class_weight, cfg.train.label_smoothing, cfg.train.steps_per_execution = "balanced", 0.1, 2
rng = np.random.default_rng(0)
images = rng.integers(0, 256, [2, 8, 32, 32, 3]).astype(np.uint8)
labels = rng.integers(0, 3, [2, 8]).astype(np.int32)
runs = {}
for precision, name in itertools.product(("float32", "mixed_bfloat16"), ("default", "mirrored")):
    strategy = strategy_lib.make_strategy(StrategyConfig(strategy=name))
    job = Job(cfg, strategy, ["a", "b", "c"], [5, 3, 1], 10, 0, [Phase("transfer", 1, 0.01)], precision)
    model, augmenter, optimizers = train._build(job)
    step = steps.make_train_function(job, model, optimizers["transfer"], augmenter, train._class_weights(job))
    per_replica = 8 // strategy.num_replicas_in_sync

    def shard(context):
        rows = slice(context.replica_id_in_sync_group * per_replica, (context.replica_id_in_sync_group + 1) * per_replica)
        return images[:, rows], labels[:, rows]

    batch = strategy.experimental_distribute_values_from_function(shard)
    totals = [step(batch, tf.constant(2 * i, tf.int64)).numpy().tolist() for i in range(3)]
    runs[f"{precision} {name}"] = {"replicas": strategy.num_replicas_in_sync, "totals": totals,
                  "weights": [v.numpy().ravel().tolist() for v in model.trainable_variables]}
print(json.dumps(runs))
"""


@pytest.fixture(scope="module")
def matched_runs():
    process = subprocess.run([sys.executable, "-c", MATCH_SCRIPT], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


# The same tolerances in both precisions: splitting the batch does not change any example's forward pass, and
# under mixed_bfloat16 the loss, the gradients of the (float32) variables and their cross-replica sum are float32
# as in float32, so only the order of float32 additions differs. Measured: totals equal, weights within 3e-8.
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_two_replica_steps_match_one_device_steps_with_the_same_global_batch(matched_runs, precision):
    one, two = matched_runs[f"{precision} default"], matched_runs[f"{precision} mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    np.testing.assert_allclose(two["totals"], one["totals"], rtol=1e-5)  # loss, correct, top-5, examples
    assert np.array(one["totals"])[:, 3].tolist() == [16, 16, 16]
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(b, a, atol=1e-5)


def _main(*args):
    return [sys.executable, "-m", "tltrain.main", *args]


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_runs_the_whole_loop(tmp_path, color_records):
    """Input through distribute_datasets_from_function, steps, evaluation, summaries and checkpoints."""
    process = subprocess.run(
        _main(f"--records_dir={color_records}", f"--model_dir={tmp_path / 'run'}", "--model=simple_cnn",
              "--weights=none", "--image_size=32", "--batch_size=16", "--freeze=none", "--epochs=2",
              "--steps_per_epoch=3", "--strategy=mirrored", "--num_cpu_devices=2", "--mixed_precision=none"),
        capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "MirroredStrategy, 2 replicas, float32, global batch 16 (8 per replica)" in process.stdout
    epochs = [line for line in process.stdout.splitlines() if line.startswith("[full] epoch")]
    assert len(epochs) == 2 and all("val_accuracy" in line for line in epochs)
    assert "done at step 6" in process.stdout
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-6")
