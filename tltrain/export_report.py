"""What each exported format gives on the evaluation split, measured from the files written: top-1 accuracy,
top-1 agreement with model.keras, size on disk, and for TFLite the median single-image latency in the LiteRT
interpreter (one thread, this CPU). A quantized variant that loses more than the allowed accuracy is an error,
so an export never ships a silently broken model."""

from __future__ import annotations

import dataclasses
import posixpath
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from tltrain import data, tflite
from tltrain.config import DataConfig
from tltrain.errors import RunError

REPORT_FILE = "report.json"
LATENCY_IMAGES = 50  # single-image calls timed per TFLite variant (after one warm-up call)


class AccuracyDropError(RunError):
    """A format lost more top-1 accuracy against model.keras than --max_accuracy_drop allows."""


@dataclasses.dataclass
class FormatReport:
    format: str  # the file or directory name in the export
    accuracy: float  # top-1 on the split
    agreement: float  # fraction of images whose top-1 class equals model.keras's
    size_bytes: int
    latency_ms: float | None  # median per image, TFLite only
    latency_best_ms: float | None  # the fastest call: what an unloaded CPU gives when others share this one


def _size(path: str) -> int:
    if not tf.io.gfile.isdir(path):
        return tf.io.gfile.stat(path).length
    return sum(tf.io.gfile.stat(posixpath.join(root, name)).length
               for root, _, names in tf.io.gfile.walk(path) for name in names)


def _latency_ms(model: bytes, images: np.ndarray) -> tuple[float, float]:
    """(median, fastest) milliseconds of single-image calls."""
    classify = tflite.Classifier(model)
    classify(images[:1])
    times = []
    for image in images:
        start = time.perf_counter()
        classify(image[np.newaxis])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), 1000 * min(times)


def measure(cfg: DataConfig, split: str, keras_path: str, saved_model_path: str,
            tflite_paths: dict[str, str]) -> tuple[list[FormatReport], int]:
    """(a row per format, model.keras first; the image count), from one pass over every image of `split`
    (the evaluation decode) running model.keras, the SavedModel's pixels signature and each TFLite variant."""
    model = keras.saving.load_model(keras_path)
    serve = tf.saved_model.load(saved_model_path).signatures[tflite.SIGNATURE]
    models = {variant: tf.io.gfile.GFile(path, "rb").read() for variant, path in tflite_paths.items()}
    classifiers = {variant: tflite.Classifier(model_bytes) for variant, model_bytes in models.items()}
    predict = {
        "keras": lambda images: model(images, training=False),
        "saved_model": lambda images: serve(images=tf.constant(images))[tflite.OUTPUT],
        **classifiers,
    }
    top1 = {name: [] for name in predict}
    labels, first_images = [], None
    for images, batch_labels in data.make_eval_dataset(cfg, cfg.image_size, split).as_numpy_iterator():
        keep = batch_labels >= 0  # padding
        images, batch_labels = images[keep], batch_labels[keep]
        if not len(images):
            continue
        first_images = images if first_images is None else first_images
        labels.append(batch_labels)
        for name, fn in predict.items():
            top1[name].append(np.argmax(np.asarray(fn(images)), axis=-1))
    labels = np.concatenate(labels)
    top1 = {name: np.concatenate(values) for name, values in top1.items()}
    timed = np.concatenate([first_images] * -(-LATENCY_IMAGES // len(first_images)))[:LATENCY_IMAGES]
    paths = {"keras": keras_path, "saved_model": saved_model_path, **tflite_paths}
    latencies = {name: _latency_ms(model_bytes, timed) for name, model_bytes in models.items()}
    rows = [FormatReport(format=posixpath.basename(paths[name]),
                         accuracy=float(np.mean(top1[name] == labels)),
                         agreement=float(np.mean(top1[name] == top1["keras"])),
                         size_bytes=_size(paths[name]),
                         latency_ms=latencies[name][0] if name in latencies else None,
                         latency_best_ms=latencies[name][1] if name in latencies else None)
            for name in predict]
    return rows, len(labels)


def table(rows: list[FormatReport], split: str, count: int) -> str:
    """The report as a fixed-width text table."""
    header = (f"{'format (' + split + f', {count} images)':<34} {'top-1':>8} {'agrees':>8} {'size':>10} "
              f"{'latency median (best)':>22}")
    lines = [header]
    for row in rows:
        latency = f"{row.latency_ms:.2f} ({row.latency_best_ms:.2f}) ms" if row.latency_ms is not None else "-"
        lines.append(f"{row.format:<34} {100 * row.accuracy:>7.2f}% {100 * row.agreement:>7.2f}% "
                     f"{row.size_bytes / 1e6:>7.2f} MB {latency:>22}")
    return "\n".join(lines)


def accuracy_drops(rows: list[FormatReport], max_drop_points: float) -> list[str]:
    """One line per format more than `max_drop_points` percentage points below model.keras (rows[0])."""
    reference = rows[0]
    return [f"{row.format}: top-1 {100 * row.accuracy:.2f}% is {100 * (reference.accuracy - row.accuracy):.2f} "
            f"points below {reference.format}'s {100 * reference.accuracy:.2f}% (--max_accuracy_drop="
            f"{max_drop_points:g}; --allow_accuracy_drop keeps it anyway)"
            for row in rows[1:] if 100 * (reference.accuracy - row.accuracy) > max_drop_points]
