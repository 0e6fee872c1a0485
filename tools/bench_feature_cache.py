#!/usr/bin/env python3
"""What --cache_features buys, measured in one run: three phase-1 trainings of the same job.

    python tools/bench_feature_cache.py                      # the bundled sample data, MobileNetV2 at 96 px
    python tools/bench_feature_cache.py --records_dir R --image_size 160 --epochs 3

  uncached      frozen backbone, every epoch runs the backbone over every image (the baseline)
  cached_first  --cache_features in a fresh model_dir: builds the cache, then trains the head on it
  cached_again  --cache_features in another fresh model_dir, reading cached_first's cache (--feature_cache_dir)

Each is its own `python -m tltrain.main` process, timed whole (start-up included); an epoch's seconds are the
ones the trainer measured for its training steps (without validation), read from the run's metrics.jsonl.
Prints two ratios: one head epoch on the cache against one frozen-backbone epoch (median over the epochs
after the first, which carry the tracing; target <= 1/20), and the first cached run's total time against the
uncached run's (target <= 1.1). The order is cached_first, uncached, cached_again: anything a first process
pays more (cold file cache) counts against the cache. Weights are none by default: a forward pass costs the same
whatever the weights are.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import statistics

from absl import app, flags

import experiment

def epoch_seconds(model_dir: pathlib.Path) -> list[float]:
    """Seconds of each phase-1 epoch's training steps, as the trainer measured them."""
    from tltrain import reporting

    return [r["seconds"] for r in reporting.read_metrics(str(model_dir))
            if r["event"] == "epoch" and r["phase"] == "transfer"]


def steady(seconds: list[float]) -> float:
    """The median epoch after the first (which includes tracing the step function); the first if alone."""
    return statistics.median(seconds[1:] or seconds)


def bench(records_dir: str, out: pathlib.Path, job_flags: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    base = [f"--records_dir={records_dir}", *job_flags]
    runs = {
        "cached_first": ["--cache_features"],
        "uncached": [],
        "cached_again": ["--cache_features", f"--feature_cache_dir={out / 'cached_first' / 'feature_cache'}"],
    }
    results = {}
    for name, extra in runs.items():
        print(f"== {name}", flush=True)
        total = experiment.run_tltrain([*base, f"--model_dir={out / name}", *extra], out / f"{name}.log", echo=False)
        results[name] = {"total": total, "epochs": epoch_seconds(out / name)}
        print(f"   {total:.1f}s, epochs {', '.join(f'{s:.2f}s' for s in results[name]['epochs'])}", flush=True)
    if "reusing" not in (out / "cached_again.log").read_text():
        raise SystemExit("bench_feature_cache: cached_again did not reuse the cache; see its log")
    head_epoch, frozen_epoch = steady(results["cached_again"]["epochs"]), steady(results["uncached"]["epochs"])
    return {
        "frozen_backbone_epoch_s": frozen_epoch, "head_epoch_s": head_epoch,
        "head_epoch_ratio": head_epoch / frozen_epoch,
        "uncached_total_s": results["uncached"]["total"], "cached_first_total_s": results["cached_first"]["total"],
        "cached_again_total_s": results["cached_again"]["total"],
        "first_run_ratio": results["cached_first"]["total"] / results["uncached"]["total"],
    }


def define_flags() -> None:
    """The command line (only when run as a script)."""
    flags.DEFINE_string("records_dir", "", "records to train on; default: the sample data, converted once")
    flags.DEFINE_string("out", str(experiment.ROOT / ".cache" / "bench_feature_cache"), "runs and logs go here")
    flags.DEFINE_string("job_flags", "--model=mobilenet_v2 --weights=none --image_size=96 --batch_size=32 "
                        "--epochs=3 --augment=none", "tltrain flags of the job (all three runs)")


def main(argv: list[str]) -> None:
    del argv
    FLAGS = flags.FLAGS
    out = pathlib.Path(FLAGS.out).resolve()
    records_dir = FLAGS.records_dir
    if not records_dir:
        from tltrain import convert

        records_dir = str(out.parent / "bench_feature_cache_records")
        if not os.path.exists(os.path.join(records_dir, "dataset.json")):
            convert.convert(str(experiment.ROOT / "sample_data" / "fashion_mnist"), records_dir, overwrite=True)
    job_flags = experiment.tltrain_flags(FLAGS.job_flags)
    result = bench(records_dir, out, job_flags)
    print(f"\njob: {' '.join(job_flags)}  (records {records_dir}, load average {os.getloadavg()[0]:.1f})")
    print(f"one frozen-backbone epoch {result['frozen_backbone_epoch_s']:.2f}s, one head epoch on the cache "
          f"{result['head_epoch_s']:.3f}s: ratio {result['head_epoch_ratio']:.4f} "
          f"(1/{1 / result['head_epoch_ratio']:.0f}; target <= 1/20)")
    print(f"total: uncached {result['uncached_total_s']:.1f}s, cached first run {result['cached_first_total_s']:.1f}s, "
          f"cached again {result['cached_again_total_s']:.1f}s: first-run ratio {result['first_run_ratio']:.3f} "
          "(target <= 1.1)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
