"""Evaluation: the distributed eval step (used after every epoch and by --mode=evaluate), the per-class
report, and the confusion-matrix picture for TensorBoard and model_dir."""

from __future__ import annotations

import dataclasses
import io
import json
import posixpath
import sys

import numpy as np
import tensorflow as tf

import tltrain
from tltrain import data, models, progbar, run_dir, steps
from tltrain import strategy as strategy_lib
from tltrain.config import RunConfig

REPORT_FILE = "evaluation.json"
CONFUSION_FILE = "confusion_matrix.png"


@dataclasses.dataclass
class EvalResult:
    loss: float
    accuracy: float
    top5_accuracy: float
    count: int
    confusion: np.ndarray  # [true class, predicted class] counts


def make_evaluator(strategy, model, cfg: RunConfig, split: str, num_classes: int, num_steps: int, make_dataset=None):
    """A callable evaluating `model` on the padded eval dataset of `split` (data.PADDING_LABEL marks padding and
    is ignored) for `num_steps` batches; sums are reduced over replicas and workers. `make_dataset(input_context)`
    replaces the image pipeline (the feature cache evaluates its head on cached features). The callable takes
    an optional `on_step(done)`, called after every batch (progress display)."""
    top_k = min(5, num_classes)
    dataset = strategy.distribute_datasets_from_function(
        make_dataset or (lambda context: data.make_eval_dataset(cfg.data, cfg.data.image_size, split, context))
    )

    def replica_step(images, labels):
        probabilities = model(images, training=False)
        valid = tf.cast(tf.not_equal(labels, data.PADDING_LABEL), tf.float32)
        targets = tf.maximum(labels, 0)
        losses = steps.per_example_loss(tf.one_hot(targets, num_classes), probabilities, cfg.train.label_smoothing)
        top1, topk = steps.hits(targets, probabilities, top_k)
        predictions = tf.argmax(tf.cast(probabilities, tf.float32), -1, output_type=tf.int32)
        confusion = tf.math.confusion_matrix(targets, predictions, num_classes, weights=valid, dtype=tf.float32)
        sums = tf.stack([tf.reduce_sum(losses * valid), tf.reduce_sum(top1 * valid), tf.reduce_sum(topk * valid),
                         tf.reduce_sum(valid)])
        return sums, confusion

    eval_step = tf.function(steps.replicated(strategy, replica_step))

    def evaluate(on_step=None) -> EvalResult:
        totals = np.zeros(4)
        confusion = np.zeros([num_classes, num_classes])
        for done, batch in zip(range(1, num_steps + 1), dataset):
            sums, batch_confusion = eval_step(*batch)
            totals += sums.numpy()
            confusion += batch_confusion.numpy()
            if on_step is not None:
                on_step(done)
        count = max(totals[3], 1.0)
        return EvalResult(totals[0] / count, totals[1] / count, totals[2] / count, int(totals[3]),
                          np.rint(confusion).astype(np.int64))

    return evaluate


def classification_report(confusion: np.ndarray, class_names: list[str]) -> dict:
    """Per-class precision, recall, F1 and support from a [true, predicted] confusion matrix."""
    true_positives = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    support = confusion.sum(axis=1).astype(float)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(precision), where=denominator > 0)
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }


def confusion_png(confusion: np.ndarray, class_names: list[str]) -> bytes:
    """The confusion matrix as a PNG (rows: true class, columns: predicted), counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    n = len(class_names)
    size = max(4.0, 0.5 * n + 2)
    figure, axes = plt.subplots(figsize=(size, size), dpi=80)
    axes.imshow(confusion, cmap="Blues")
    axes.set_xticks(range(n), class_names, rotation=90)
    axes.set_yticks(range(n), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= 30:
        threshold = confusion.max() / 2 if confusion.size else 0
        for i in range(n):
            for j in range(n):
                axes.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                          color="white" if confusion[i, j] > threshold else "black")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def confusion_summary(confusion: np.ndarray, class_names: list[str], step: int) -> None:
    """Writes the labelled confusion matrix image to the default summary writer."""
    image = tf.image.decode_png(confusion_png(confusion, class_names), channels=3)
    tf.summary.image("confusion_matrix", image[tf.newaxis], step=step)


def confusion_heatmap(confusion: np.ndarray) -> np.ndarray:
    """The confusion matrix as a uint8 [1, h, w, 3] picture without text: row i, column j (true class i in the
    order of labels.txt, predicted j) is a square whose blue is the share of class i predicted as j. Drawing
    the labelled picture costs about half a second, more than a validation on cached features, so training
    draws this after every validation and evaluate the labelled one."""
    n = len(confusion)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    cell = max(1, 256 // max(n, 1))
    white, blue = np.array([247, 251, 255], float), np.array([8, 48, 107], float)
    pixels = white + shares[..., np.newaxis] * (blue - white)
    return np.repeat(np.repeat(pixels, cell, axis=0), cell, axis=1).round().astype(np.uint8)[np.newaxis]


def default_split(available: dict[str, int], validation_split: str) -> str:
    """The test split when the records have one, else the validation split."""
    return "test" if available.get("test") else validation_split


def prepare(model_dir: str, records_dir: str = "", split: str = "", tta: str = "none") -> tuple[RunConfig, str]:
    """The trained run's config (records_dir replaced when given; this evaluation's --tta) and the split to
    evaluate; one-line errors for a model_dir without a trained model, missing records, or a split the records
    lack."""
    cfg, _ = run_dir.load_config(model_dir)
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, tta=tta))
    if records_dir:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, records_dir=records_dir))
    counts = data.dataset_info(cfg.data).split_counts
    split = split or default_split(counts, cfg.data.validation_split)
    if not counts.get(split):
        raise ValueError(f"--eval_split={split}: the records in {cfg.data.records_dir} have no such split")
    return cfg, split


def evaluate(cfg: RunConfig, split: str, strategy: tf.distribute.Strategy) -> dict:
    """--mode=evaluate: accuracy, top-5, per-class precision/recall/F1 and the confusion matrix of the kept
    model (with --tta=flip: averaged over each image and its mirror) on `split`, written to model_dir (evaluation.json, confusion_matrix.png) and TensorBoard
    (model_dir/evaluation). Returns the report."""
    model_dir = cfg.train.model_dir
    with strategy.scope():
        _, model, class_names = run_dir.load_trained(model_dir)
        if cfg.evaluate.tta == "flip":
            model = models.with_flip_tta(model)
    num_steps = data.eval_steps(cfg.data, split)
    progress = progbar.StepProgress(f"evaluate {split}", num_steps, cfg.train.progress_seconds)
    result = make_evaluator(strategy, model, cfg, split, len(class_names), num_steps)(progress.update)
    progress.close()
    report = {
        "split": split,
        "tta": cfg.evaluate.tta,
        "count": result.count,
        "loss": result.loss,
        "accuracy": result.accuracy,
        "top5_accuracy": result.top5_accuracy,
        "per_class": classification_report(result.confusion, class_names),
        "confusion_matrix": result.confusion.tolist(),
        "class_names": class_names,
    }
    if strategy_lib.is_chief():
        run_dir.write_text(posixpath.join(model_dir, REPORT_FILE), json.dumps(report, indent=2) + "\n")
        with tf.io.gfile.GFile(posixpath.join(model_dir, CONFUSION_FILE), "wb") as f:
            f.write(confusion_png(result.confusion, class_names))
        step = run_dir.checkpoint_step(model_dir)
        with tf.summary.create_file_writer(posixpath.join(model_dir, "evaluation")).as_default():
            for name in ("loss", "accuracy", "top5_accuracy"):
                tf.summary.scalar(f"{split}/{name}", report[name], step=step)
            confusion_summary(result.confusion, class_names, step)
    return report


sys.modules[__name__].__class__ = tltrain.ApiModule  # tltrain.evaluate(...) calls tltrain.api.evaluate(...)
