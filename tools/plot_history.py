#!/usr/bin/env python3
"""Training and validation accuracy and loss curves of a model_dir as one PNG, without starting TensorBoard.

    python tools/plot_history.py --model_dir runs/sample/model              # -> runs/sample/model/history.png
    python tools/plot_history.py --model_dir D --out curves.png --x seconds

Reads the scalars the trainer writes to model_dir/train and model_dir/validation (TensorBoard event files,
local or gs://). A resumed run's repeated steps keep their latest value. `read_scalars` is also what
tools/compare_scratch.py and tools/sweep_per_class.py read runs with.
"""

from __future__ import annotations

import posixpath
import sys

import tltrain  # noqa: F401  (first: TensorFlow's start-up settings, before TensorFlow loads)
from absl import app, flags

RUNS = ("train", "validation")
METRICS = ("accuracy", "loss")


def read_scalars(model_dir: str) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """{run: {tag: [(step, wall_time, value), ...] by step}} for the train and validation runs of a model_dir."""
    import tensorflow as tf

    scalars: dict[str, dict[str, dict[int, tuple[float, float]]]] = {}
    for run in RUNS:
        for path in sorted(tf.io.gfile.glob(posixpath.join(model_dir, run, "events.out.tfevents.*"))):
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    kind = value.WhichOneof("value")
                    if kind == "tensor" and value.tensor.tensor_shape.dim:
                        continue  # images (confusion matrix, augmented grid) are not scalars
                    number = float(tf.make_ndarray(value.tensor)) if kind == "tensor" else value.simple_value
                    points = scalars.setdefault(run, {}).setdefault(value.tag, {})
                    if event.step not in points or points[event.step][0] <= event.wall_time:
                        points[event.step] = (event.wall_time, number)
    return {run: {tag: [(step, *points[step]) for step in sorted(points)] for tag, points in tags.items()}
            for run, tags in scalars.items()}


def plot(model_dir: str, out: str, x: str = "step") -> str:
    """Writes the two-panel PNG (accuracy, loss; train and validation) and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    scalars = read_scalars(model_dir)
    if not any(scalars.get(run, {}).get(metric) for run in RUNS for metric in METRICS):
        raise ValueError(f"--model_dir={model_dir}: no accuracy/loss summaries in {'/ or '.join(RUNS)}/")
    start = min(points[0][1] for tags in scalars.values() for points in tags.values())
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    for axis, metric in zip(axes, METRICS):
        for run, style in zip(RUNS, ("-", "o-")):
            points = scalars.get(run, {}).get(metric, [])
            if points:
                xs = [step if x == "step" else wall - start for step, wall, _ in points]
                axis.plot(xs, [value for _, _, value in points], style, label=run, markersize=3)
        axis.set_title(metric)
        axis.set_xlabel("step" if x == "step" else "seconds since the first summary")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(model_dir, fontsize=9)
    figure.tight_layout()
    import tensorflow as tf

    with tf.io.gfile.GFile(out, "wb") as f:
        figure.savefig(f, format="png")
    plt.close(figure)
    return out


def define_flags() -> None:
    """The command line (only when run as a script: other tools import this module)."""
    flags.DEFINE_string("model_dir", None, "a tltrain model_dir (with train/ and validation/ summaries)")
    flags.DEFINE_string("out", "", "PNG to write; default model_dir/history.png")
    flags.DEFINE_enum("x", "step", ["step", "seconds"], "horizontal axis: global step or wall-clock seconds")


def main(argv: list[str]) -> None:
    del argv
    FLAGS = flags.FLAGS
    out = FLAGS.out or posixpath.join(FLAGS.model_dir, "history.png")
    try:
        print(plot(FLAGS.model_dir, out, FLAGS.x))
    except ValueError as error:
        sys.exit(f"plot_history: {error}")


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("model_dir")
    app.run(main)
