#!/usr/bin/env python3
"""float32 against mixed_bfloat16 train steps on this machine, measured in one run: what --mixed_precision=auto
must not get wrong on a CPU.

    python tools/bench_precision.py                        # MobileNetV2 at 160 px, batch 32, both phases
    python tools/bench_precision.py --model=efficientnet_b0 --image_size=224 --rounds=5

For each phase (transfer: frozen backbone; full: everything trains) both precisions build the same classifier
and its train step (augmentation off; the loss the trainer uses), trace it and warm up, then take turns in
--rounds rounds of --steps steps each, so a load change on a shared machine hits both alike. Prints the median
images/s of each and the ratio bfloat16 / float32 (above 1: bfloat16 is faster), with the CPU's model name and
its bf16 flags. Weights are none: a step costs the same whatever the weights are.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

from absl import app, flags

from tltrain import evaluate, models, run_dir  # (importing tltrain sets TensorFlow's start-up before it loads)
from tltrain.config import RunConfig

flags.DEFINE_string("model", "mobilenet_v2", "backbone (a --model of tltrain.main)")
flags.DEFINE_integer("image_size", 160, "input size")
flags.DEFINE_integer("batch_size", 32, "batch")
flags.DEFINE_integer("steps", 3, "steps per timed turn")
flags.DEFINE_integer("rounds", 3, "turns per precision (the median turn is reported)")
flags.DEFINE_list("phases", ["transfer", "full"], "transfer (frozen backbone) and/or full (all layers train)")
FLAGS = flags.FLAGS
PRECISIONS = ("float32", "mixed_bfloat16")


def cpu_description() -> str:
    """The CPU's model name and which bf16 instruction flags it reports (Linux; 'unknown' elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    bf16 = sorted({flag for flag in flags_line.split() if "bf16" in flag})
    return f"{name}, bf16 flags: {' '.join(bf16) or 'none'}, {os.cpu_count()} cores"


def train_step(phase: str, precision: str):
    """A compiled step of `phase` for the classifier under `precision`, and a batch to feed it."""
    import keras
    import numpy as np
    import tensorflow as tf

    cfg = RunConfig()
    cfg.data = dataclasses.replace(cfg.data, image_size=FLAGS.image_size)
    cfg.model = dataclasses.replace(cfg.model, model=FLAGS.model, weights="none")
    keras.utils.set_random_seed(0)
    model = run_dir.build_model(cfg, 10, precision)
    models.set_phase(model, phase, cfg.model, "", fine_tune_batchnorm=True)
    optimizer = keras.optimizers.Adam(1e-4)
    variables = model.trainable_variables
    optimizer.build(variables)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3), np.uint8))
    labels = tf.one_hot(rng.integers(0, 10, FLAGS.batch_size), 10)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(evaluate.per_example_loss(labels, model(images, training=True), 0.0))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def images_per_second(step) -> float:
    started = time.perf_counter()
    for _ in range(FLAGS.steps):
        loss = step()
    float(loss)
    return FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - started)


def main(argv: list[str]) -> None:
    del argv
    print(f"{cpu_description()}; {FLAGS.model} at {FLAGS.image_size} px, batch {FLAGS.batch_size}, load average "
          f"{os.getloadavg()[0]:.1f} at the start", flush=True)
    for phase in FLAGS.phases:
        steps = {precision: train_step(phase, precision) for precision in PRECISIONS}
        for step in steps.values():  # trace and warm up
            step()
            step()
        speeds = {precision: [] for precision in PRECISIONS}
        for _ in range(FLAGS.rounds):
            for precision, step in steps.items():
                speeds[precision].append(images_per_second(step))
        f32, bf16 = (statistics.median(speeds[p]) for p in PRECISIONS)
        print(f"{phase:8s} float32 {f32:7.1f} img/s   mixed_bfloat16 {bf16:7.1f} img/s   "
              f"bfloat16 / float32 = {bf16 / f32:.2f}x", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    app.run(main)
