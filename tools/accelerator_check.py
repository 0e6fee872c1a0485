#!/usr/bin/env python3
"""How well tltrain feeds this machine's accelerator: one command, a few minutes, one table (or --json).

    python tools/accelerator_check.py             # the GPUs this process sees; without any, a small CPU check
    python tools/accelerator_check.py --tpu=local # a Cloud TPU VM
    python tools/accelerator_check.py --json

It reports the device; the precision --mixed_precision=auto picks there; whether the whole train step
(augmentation, forward, loss, gradients, optimizer update) compiles with XLA (jit_compile); and the
train-step images/second of each model, the trainer's own step function and loop:

  synthetic   uint8 batches already on the device: the model's ceiling, nothing to wait for
  xla         the same step compiled with jit_compile=True (when it compiles)
  records     through tltrain's input pipeline from records of the photo-like 500x375 JPEGs
  resized     the same from records written with make_tfrecords --resize_for=image_size

records / synthetic is how well the host feeds the device (1.0: the model is the limit), and the input-wait
share is the part of a step spent waiting for the next batch (the trainer logs the same figure). With two or
more devices everything but xla runs again on two replicas (MirroredStrategy, twice the global batch).

On an accelerator the default is MobileNetV2 and ResNet50 at 224 px, 128 images per replica, weights none
(the step costs the same with ImageNet weights). Without one it checks mobilenet_v2 (alpha 0.35) at 96 px,
batch 16, in a couple of minutes, so CI runs it. The photo-like images and records are generated once into
--work_dir and reused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time

import tltrain  # noqa: F401  (first: TensorFlow's start-up settings, before TensorFlow loads)
from absl import app, flags

import photo_records
from shared import REPO_ROOT

flags.DEFINE_list("models", None, "Models to check (default: mobilenet_v2,resnet50 on an accelerator, "
                  "mobilenet_v2 on a CPU).")
flags.DEFINE_float("alpha", 0, "Width multiplier of MobileNet models (0: 1.0 on an accelerator, 0.35 on a CPU).")
flags.DEFINE_integer("image_size", 0, "Training size (0: 224 on an accelerator, 96 on a CPU).")
flags.DEFINE_integer("batch_size", 0, "Images per replica and step (0: 128 on an accelerator, 16 on a CPU).")
flags.DEFINE_integer("steps", 0, "Timed steps per measurement (0: 40 on an accelerator, 4 on a CPU).")
flags.DEFINE_integer("num_images", 0, "Photo-like images to generate (0: 4096 on an accelerator, 128 on a CPU).")
flags.DEFINE_enum("phase", "full", ["full", "transfer"], "full: every layer trains (the heaviest step); "
                  "transfer: the backbone is frozen (a faster step, harder to feed).")
flags.DEFINE_string("tpu", "", "A TPU to check (a name, or local on a TPU VM); empty: GPUs, else the CPU.")
flags.DEFINE_bool("xla", True, "Also try the train step with jit_compile=True.")
flags.DEFINE_string("work_dir", str(REPO_ROOT / ".cache" / "accelerator_check"), "Images and records go here.")
flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
FLAGS = flags.FLAGS

WARMUP_STEPS = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Settings:
    accelerator: bool
    models: list[str]
    alpha: float
    image_size: int
    batch_size: int
    steps: int
    num_images: int


def settings_for(accelerator: bool) -> Settings:
    """The flags, with their 0 / empty defaults filled in for an accelerator or a CPU."""
    def pick(value, on_accelerator, on_cpu):
        return value or (on_accelerator if accelerator else on_cpu)

    return Settings(accelerator, pick(FLAGS.models, ["mobilenet_v2", "resnet50"], ["mobilenet_v2"]),
                    pick(FLAGS.alpha, 1.0, 0.35), pick(FLAGS.image_size, 224, 96), pick(FLAGS.batch_size, 128, 16),
                    pick(FLAGS.steps, 40, 4), pick(FLAGS.num_images, 4096, 128))


def strategies() -> tuple[str, str, list]:
    """(kind, description, strategies to check): a TPU's, else one GPU's and two GPUs' when there are two,
    else the CPU's."""
    import tensorflow as tf

    if FLAGS.tpu:
        from tltrain import strategy as strategy_lib
        from tltrain.config import StrategyConfig

        tpu = strategy_lib.make_strategy(StrategyConfig(strategy="tpu", tpu=FLAGS.tpu))
        return "tpu", f"TPU {FLAGS.tpu}: {tpu.num_replicas_in_sync} cores", [tpu]
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
        names = ", ".join(f"{d.get('device_name', 'GPU')} (compute capability "
                          f"{'.'.join(map(str, d.get('compute_capability', ('?',))))})" for d in details)
        logical = [d.name for d in tf.config.list_logical_devices("GPU")]
        checked = [tf.distribute.OneDeviceStrategy(logical[0])]
        if len(logical) >= 2:
            checked.append(tf.distribute.MirroredStrategy(logical[:2]))
        return "gpu", f"{len(gpus)} GPU: {names}", checked
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "CPU") if os.path.exists("/proc/cpuinfo") else "CPU"
    first_cpu = tf.config.list_logical_devices("CPU")[0].name
    return "cpu", f"no accelerator; {cpu}, {os.cpu_count()} cores", [tf.distribute.OneDeviceStrategy(first_cpu)]


class Check:
    """One model's train step on one strategy, as the trainer builds it."""

    def __init__(self, settings: Settings, model: str, records_dir: str, strategy, model_dir: str):
        import tensorflow as tf

        from tltrain import augment, models, run_dir, steps, train
        from tltrain.config import (AugmentConfig, DataConfig, ModelConfig, RunConfig, StrategyConfig,
                                    TrainConfig)

        replicas = strategy.num_replicas_in_sync
        cfg = RunConfig(
            data=DataConfig(records_dir=records_dir, image_size=settings.image_size,
                            batch_size=settings.batch_size * replicas),
            augment=AugmentConfig(preset="flip"),
            model=ModelConfig(model=model, weights="none", alpha=settings.alpha if "mobilenet" in model else 1.0),
            train=TrainConfig(model_dir=model_dir, epochs=1, mixed_precision="auto",
                              freeze="none" if FLAGS.phase == "full" else "backbone"),
            strategy=StrategyConfig(strategy="default"),
        )
        self.job = dataclasses.replace(train.prepare(cfg), strategy=strategy)
        self.cfg, self.strategy, self.replicas = self.job.cfg, strategy, replicas
        num_classes = len(self.job.class_names)
        with strategy.scope():
            self.model = run_dir.build_model(self.cfg, num_classes, self.job.precision)
            models.set_phase(self.model, FLAGS.phase, self.cfg.model, "", False)
            augmenter = augment.Augmenter(self.cfg.augment, num_classes)
            optimizer = train.make_optimizer("sgd", 0.01, self.job.precision)
        self.step = steps.make_train_function(self.job, self.model, optimizer, augmenter, None)
        size, per_replica = settings.image_size, settings.batch_size

        def synthetic(context):  # one replica's stack of one batch, made on its device
            images = tf.random.stateless_uniform([1, per_replica, size, size, 3], [0, context.replica_id_in_sync_group],
                                                 maxval=256, dtype=tf.int32)
            return tf.cast(images, tf.uint8), tf.zeros([1, per_replica], tf.int32)

        self.synthetic_batch = strategy.experimental_distribute_values_from_function(synthetic)

    def run(self, fn, next_batch, steps: int) -> dict:
        """img/s and input-wait share of `steps` steps after the warm-up, timed as the trainer times them."""
        for i in range(WARMUP_STEPS):
            fn(next_batch(), i).numpy()
        wait, started = 0.0, time.perf_counter()
        for i in range(steps):
            before = time.perf_counter()
            batch = next_batch()
            wait += time.perf_counter() - before
            fn(batch, i).numpy()
        seconds = time.perf_counter() - started
        return {"images_per_second": round(steps * self.cfg.data.batch_size / seconds, 1),
                "input_wait_share": round(wait / seconds, 3)}

    def on_device(self, steps: int, jit_compile: bool = False) -> dict | None:
        """The synthetic measure; with jit_compile, the step compiled by XLA, timed only when steps > 0 (XLA's CPU
        convolutions are far slower than oneDNN's, so on a CPU only whether it compiles is worth knowing)."""
        import tensorflow as tf

        fn = tf.function(self.step.python_function, jit_compile=True) if jit_compile else self.step

        def call(batch, i):
            return fn(batch, tf.constant(i, tf.int64))

        if not steps:
            call(self.synthetic_batch, 0).numpy()
            return None
        return self.run(call, lambda: self.synthetic_batch, steps)

    def from_records(self, records_dir: str, steps: int) -> dict:
        import tensorflow as tf

        from tltrain import data

        data_cfg = dataclasses.replace(self.cfg.data, records_dir=records_dir)
        batches = self.strategy.distribute_datasets_from_function(
            lambda context: data.make_train_dataset(data_cfg, data_cfg.image_size, context)
            .batch(1, drop_remainder=True).prefetch(1))  # the trainer's stack of steps_per_execution=1 batch
        iterator = iter(batches)
        for _ in range(3):  # the shuffle buffer fills and autotuning settles before the warm-up steps
            next(iterator)
        return self.run(lambda batch, i: self.step(batch, tf.constant(i, tf.int64)), lambda: next(iterator), steps)


def check_model(settings: Settings, model: str, full_dir: str, resized_dir: str, strategy, xla: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="tltrain-accelerator-check-") as model_dir:
        log(f"{model}, {strategy.num_replicas_in_sync} replica(s): building ...")
        check = Check(settings, model, full_dir, strategy, model_dir)
        result = {"model": model, "replicas": check.replicas, "global_batch": check.cfg.data.batch_size,
                  "precision": check.job.precision}
        result["synthetic"] = check.on_device(settings.steps)
        if xla:
            try:
                timed = check.on_device(settings.steps if settings.accelerator else 0, jit_compile=True)
                result.update({"xla": timed} if timed else {})
                result["xla_compiles"] = True
            except Exception as error:  # noqa: BLE001  any failure to compile is the answer, reported in one line
                result["xla_compiles"] = False
                result["xla_error"] = " ".join(str(error).split())[:300] or type(error).__name__
        for name, records_dir in (("records", full_dir), ("resized", resized_dir)):
            log(f"{model}, {check.replicas} replica(s): {name} ...")
            result[name] = check.from_records(records_dir, settings.steps)
            result[name]["x_synthetic"] = round(
                result[name]["images_per_second"] / result["synthetic"]["images_per_second"], 3)
        return result


def print_table(report: dict) -> None:
    print(f"device: {report['device']}")
    print(f"precision (--mixed_precision=auto): {report['precision']}; phase: {report['phase']}; "
          f"image size {report['image_size']}; load average {report['load_average']}")
    for row in report["results"]:
        xla = ("compiles" if row.get("xla_compiles") else f"does not compile ({row.get('xla_error', '')[:120]})"
               if "xla_compiles" in row else "not tried")
        print(f"\n{row['model']}, {row['replicas']} replica(s), global batch {row['global_batch']}; XLA: {xla}")
        print(f"  {'input':<11}{'img/s':>9}  {'x synthetic':>11}  {'input wait':>10}")
        for name in ("synthetic", "xla", "records", "resized"):
            if name in row:
                figures = row[name]
                ratio = f"{figures.get('x_synthetic', 1.0 if name == 'synthetic' else 0):>11.2f}" \
                    if name != "xla" else f"{'':>11}"
                print(f"  {name:<11}{figures['images_per_second']:>9.1f}  {ratio}  "
                      f"{100 * figures['input_wait_share']:>9.1f}%")


def main(argv):
    del argv
    from tltrain import strategy as strategy_lib

    kind, description, checked = strategies()
    settings = settings_for(kind != "cpu")
    log(f"{description}; checking {', '.join(settings.models)} at {settings.image_size} px")
    images_dir = photo_records.photo_images(FLAGS.work_dir, settings.num_images, 10, log)
    full_dir = photo_records.photo_records(images_dir, FLAGS.work_dir, 16, 0, log)
    resized_dir = photo_records.photo_records(images_dir, FLAGS.work_dir, 16, settings.image_size, log)
    results = [check_model(settings, model, full_dir, resized_dir, strategy, FLAGS.xla and index == 0)
               for index, strategy in enumerate(checked) for model in settings.models]
    report = {"device": description, "kind": kind, "precision": strategy_lib.resolve_precision("auto", checked[0]),
              "phase": FLAGS.phase, "image_size": settings.image_size, "batch_size_per_replica": settings.batch_size,
              "steps": settings.steps, "load_average": round(os.getloadavg()[0], 2), "results": results}
    if FLAGS.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    app.run(main)
