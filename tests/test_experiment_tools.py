"""The experiment tools on tiny data: plot_history reads the trainer's summaries into a PNG, the per-class
sweep cuts the training split (sharing the validation split) and writes its CSV and PNG, and the scratch
comparison runs both arms within the budget and writes its CSV and PNG."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT, write_color_records

sys.path.insert(0, str(REPO_ROOT / "tools"))

import plot_history  # noqa: E402
import sweep_per_class  # noqa: E402

from tltrain import records  # noqa: E402
from tltrain.dataset_metadata import DatasetMetadata  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = "--model=simple_cnn --weights=none --freeze=none --image_size=32 --batch_size=16 --augment=none"


def run_tool(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_plot_history_reads_scalars_keeping_the_latest_value_of_a_repeated_step(tmp_path):
    for run, values in (("train", [(1, 0.5), (2, 0.7), (2, 0.75)]), ("validation", [(1, 0.4), (2, 0.6)])):
        with tf.summary.create_file_writer(str(tmp_path / run)).as_default():
            for step, accuracy in values:
                tf.summary.scalar("accuracy", accuracy, step=step)
                tf.summary.scalar("loss", 1 - accuracy, step=step)
            tf.summary.image("grid", tf.zeros([1, 4, 4, 3]), step=1)  # not a scalar: ignored
    scalars = plot_history.read_scalars(str(tmp_path))
    assert [(s, round(v, 4)) for s, _, v in scalars["train"]["accuracy"]] == [(1, 0.5), (2, 0.75)]
    assert [round(v, 4) for _, _, v in scalars["validation"]["loss"]] == [0.6, 0.4]
    assert "grid" not in scalars["train"]
    out = plot_history.plot(str(tmp_path), str(tmp_path / "h.png"), x="seconds")
    assert open(out, "rb").read(8) == PNG_MAGIC
    with pytest.raises(ValueError, match="no accuracy/loss summaries"):
        plot_history.plot(str(tmp_path / "empty"), str(tmp_path / "e.png"))


def test_sweep_sizes_are_checked():
    assert sweep_per_class.parse_sizes(["1", "20", "all"]) == [1, 20, None]
    with pytest.raises(ValueError, match="--max_per_class=1,x: 'x' is not a positive count or 'all'"):
        sweep_per_class.parse_sizes(["1", "x"])


@pytest.mark.slow
def test_sweep_cuts_the_training_split_and_writes_csv_and_png(tmp_path, color_records):
    out = tmp_path / "sweep"
    printed = run_tool("tools/sweep_per_class.py", f"--records_dir={color_records}", f"--out={out}",
                       "--max_per_class=2,all", f"--train_flags={TINY} --epochs=2", "--min_steps_per_epoch=3")
    rows = read_csv(out / "per_class.csv")
    assert [(r["max_per_class"], r["train_images"], r["steps"]) for r in rows] == [("2", "6", "6"), ("all", "96", "12")]
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows) and "val_accuracy" in printed
    assert (out / "per_class.png").read_bytes()[:8] == PNG_MAGIC

    parent, subset = DatasetMetadata.read(str(color_records)), DatasetMetadata.read(str(out / "records" / "2"))
    assert subset.splits["train"].per_class == (2, 2, 2) and subset.provenance["max_per_class"] == 2
    assert subset.splits["validation"].digest == parent.splits["validation"].digest
    assert subset.splits["train"].digest != parent.splits["train"].digest
    (shard,) = subset.shard_paths("train")
    labels = [int(records.parse_example(s)["image/class/label"]) for s in tf.data.TFRecordDataset(shard)]
    assert np.bincount(labels).tolist() == [2, 2, 2]


@pytest.mark.slow
def test_compare_scratch_runs_both_arms_within_the_budget_and_writes_csv_and_png(tmp_path):
    records_dir = write_color_records(tmp_path / "records", {"train": 16, "validation": 6, "test": 6})
    out = tmp_path / "compare"
    printed = run_tool("tools/compare_scratch.py", f"--records_dir={records_dir}", f"--out={out}",
                       "--budget_seconds=600",
                       "--pretrained_flags=--model=mobilenet_v2 --alpha=0.35 --weights=none --image_size=32 "
                       "--batch_size=16 --cache_features --epochs=2",
                       f"--scratch_flags={TINY} --epochs=2")
    rows = read_csv(out / "compare.csv")
    assert [(r["arm"], r["step"]) for r in rows] == [("pretrained", "3"), ("pretrained", "6"), ("scratch", "3"),
                                                      ("scratch", "6")]
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC
    assert "test_accuracy" in printed and "feature cache: built" in (out / "pretrained.log").read_text()
    report = json.loads((out / "scratch" / "evaluation.json").read_text())
    assert report["split"] == "test" and report["count"] == 18
