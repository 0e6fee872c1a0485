"""What a run reports while it trains: for people, a console line per epoch and progress inside an epoch or an
evaluation; for tools, model_dir/metrics.jsonl, one JSON object per epoch and per evaluation; for TensorBoard,
summaries, hparams and profiler traces. Files are written by the chief only, through tf.io.gfile (gs:// works)."""

from __future__ import annotations

import json
import posixpath
import time

import numpy as np
import tensorflow as tf

from tltrain import augment
from tltrain import evaluate as evaluate_lib
from tltrain import strategy as strategy_lib
from tltrain.job import Job, Phase

METRICS_FILE = "metrics.jsonl"
EVALUATION_KEYS = ("loss", "accuracy", "top5_accuracy")


class Meter:
    """Sums over a window of executions (an epoch, or a --log_steps window of training summaries)."""

    def __init__(self):
        self.totals = np.zeros(4)  # loss (per step), correct, top-5 correct, examples
        self.steps = 0
        self.seconds = 0.0
        self.input_wait = 0.0

    def add(self, totals: np.ndarray, steps: int, seconds: float, input_wait: float) -> None:
        self.totals += totals
        self.steps += steps
        self.seconds += seconds
        self.input_wait += input_wait

    def running(self, global_batch: int) -> dict:
        """What a progress bar shows: the mean loss so far and the images per second."""
        return {"loss": self.totals[0] / max(self.steps, 1),
                "img/s": self.steps * global_batch / max(self.seconds, 1e-9)}

    def metrics(self, global_batch: int) -> dict:
        examples = max(self.totals[3], 1.0)
        seconds = max(self.seconds, 1e-9)
        return {
            "loss": self.totals[0] / max(self.steps, 1),
            "accuracy": self.totals[1] / examples,
            "top5_accuracy": self.totals[2] / examples,
            "images_per_second": self.steps * global_batch / seconds,
            "step_time_ms": 1000 * seconds / max(self.steps, 1),
            "input_wait_share": self.input_wait / seconds,
        }


def epoch_line(phase: Phase, epoch: int, step: int, seconds: float, train: dict, validation, lr: float) -> str:
    """One Keras-like line per epoch."""
    parts = [f"[{phase.name}] epoch {epoch}/{phase.epochs} (step {step}) {seconds:.1f}s",
             f"loss {train['loss']:.4f}", f"accuracy {train['accuracy']:.4f}", f"top5 {train['top5_accuracy']:.4f}"]
    if validation is not None:
        parts += [f"val_loss {validation.loss:.4f}", f"val_accuracy {validation.accuracy:.4f}",
                  f"val_top5 {validation.top5_accuracy:.4f}"]
    parts += [f"lr {lr:.2e}", f"{train['images_per_second']:.1f} img/s", f"{train['step_time_ms']:.0f} ms/step",
              f"input wait {100 * train['input_wait_share']:.1f}%"]
    return " - ".join(parts)


class MetricsLog:
    """model_dir/metrics.jsonl: one JSON object a line, {"event": "epoch", ...} per epoch and {"event":
    "evaluation", ...} per evaluation, each with phase, epoch, step, seconds and wall-clock time. Kept across
    resumes: a resumed run drops the records past its checkpoint (that work is done again) and appends. The
    file is rewritten whole through a temporary one (gs:// objects cannot be appended to; a kill never leaves
    half a line). Chief only."""

    def __init__(self, model_dir: str, resumed_step: int):
        self.path = posixpath.join(model_dir, METRICS_FILE)
        self.enabled = strategy_lib.is_chief()
        self.lines = [json.dumps(record) for record in read_metrics(model_dir)
                      if record["step"] <= resumed_step] if self.enabled else []

    def write(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        self.lines.append(json.dumps({"event": event, **fields, "time": round(time.time(), 3)}))
        temp = f"{self.path}.incomplete"
        with tf.io.gfile.GFile(temp, "w") as f:
            f.write("".join(f"{line}\n" for line in self.lines))
        tf.io.gfile.rename(temp, self.path, overwrite=True)


def read_metrics(model_dir: str) -> list[dict]:
    """The records of model_dir/metrics.jsonl, in order ([] when there is none)."""
    path = posixpath.join(model_dir, METRICS_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def epoch_history(records: list[dict]) -> list[dict]:
    """One dict per epoch record, with the evaluation at the same step as val_loss, val_accuracy and
    val_top5_accuracy (the shape of train.train's history)."""
    evaluations = {r["step"]: r for r in records if r["event"] == "evaluation"}
    history = []
    for record in (r for r in records if r["event"] == "epoch"):
        merged = {k: v for k, v in record.items() if k != "event"}
        if record["step"] in evaluations:
            merged.update({f"val_{k}": evaluations[record["step"]][k] for k in EVALUATION_KEYS})
        history.append(merged)
    return history


class Summaries:
    """TensorBoard writers: model_dir/train, model_dir/validation, hparams in model_dir; no-ops off the chief."""

    def __init__(self, job: Job, fresh: bool):
        self.chief = strategy_lib.is_chief()
        model_dir = job.cfg.train.model_dir
        if not self.chief:
            self.train = self.validation = tf.summary.create_noop_writer()
            return
        self.train = tf.summary.create_file_writer(posixpath.join(model_dir, "train"))
        self.validation = tf.summary.create_file_writer(posixpath.join(model_dir, "validation"))
        if fresh:
            from tensorboard.plugins.hparams import api as hparams_api

            with tf.summary.create_file_writer(model_dir).as_default():
                hparams_api.hparams(_hparams(job))

    def training(self, metrics: dict, learning_rate: float, step: int) -> None:
        with self.train.as_default():
            for name, value in metrics.items():
                tf.summary.scalar(name, value, step=step)
            tf.summary.scalar("learning_rate", learning_rate, step=step)

    def evaluation(self, result, step: int) -> None:
        if not self.chief:
            return
        with self.validation.as_default():
            for name in EVALUATION_KEYS:
                tf.summary.scalar(name, getattr(result, name), step=step)
            tf.summary.image("confusion_matrix", evaluate_lib.confusion_heatmap(result.confusion), step=step)

    def augmented_grid(self, images: tf.Tensor, step: int) -> None:
        if self.chief:
            with self.train.as_default():
                tf.summary.image("augmented_inputs", augment.grid_image(images), step=step)

    def close(self) -> None:
        for writer in (self.train, self.validation):
            writer.flush()


def _hparams(job: Job) -> dict:
    cfg = job.cfg
    return {
        "model": cfg.model.model, "weights": cfg.model.weights, "alpha": cfg.model.alpha,
        "image_size": cfg.data.image_size, "batch_size": cfg.data.batch_size, "augment": cfg.augment.preset,
        "optimizer": cfg.train.optimizer, "learning_rate": cfg.train.learning_rate,
        "fine_tune_learning_rate": job.phases[-1].learning_rate, "epochs": cfg.train.epochs,
        "fine_tune_epochs": cfg.train.fine_tune_epochs, "fine_tune_at": cfg.train.fine_tune_at,
        "schedule": cfg.train.schedule, "label_smoothing": cfg.train.label_smoothing,
        "dropout": cfg.model.dropout, "precision": job.precision, "strategy": cfg.strategy.strategy,
        "replicas": job.strategy.num_replicas_in_sync,
    }


class Profiler:
    """--profile_steps=A,B: a profiler trace of global steps [A, B) in model_dir/train (chief only)."""

    def __init__(self, job: Job):
        self.start, self.stop = job.cfg.train.profile_steps or (-1, -1)
        self.logdir = posixpath.join(job.cfg.train.model_dir, "train")
        self.enabled = strategy_lib.is_chief()
        self.running = False

    def before(self, step: int) -> None:
        if self.enabled and not self.running and self.start <= step < self.stop:
            tf.profiler.experimental.start(self.logdir)
            self.running = True

    def after(self, step: int) -> None:
        if self.running and step >= self.stop:
            self.end()

    def end(self) -> None:
        if self.running:
            tf.profiler.experimental.stop()
            self.running = False
