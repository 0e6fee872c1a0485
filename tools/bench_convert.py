#!/usr/bin/env python3
"""Converter speed: images/second of tltrain.convert against reading and hashing the same files, same run.

    python tools/bench_convert.py                  # 2000 generated photo-like 500x375 JPEGs
    python tools/bench_convert.py --src data/      # your own folder (src/<class>/...)

Reading and hashing every file is the least any converter must do (the records need the bytes, the
duplicate check needs the hash); the ratio says what the rest costs. The baseline is measured in one
process (the plain loop) and on as many processes as the converter gets. Every method runs once untimed
first (page cache, TF import, the converter's forkserver), then the methods take turns, and the median
of each is reported.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tltrain import convert  # noqa: E402

flags.DEFINE_string("src", None, "Folder to convert (src/<class>/...); default: generate photo-like JPEGs.")
flags.DEFINE_integer("num_images", 2000, "Images to generate when --src is not given.")
flags.DEFINE_integer("num_classes", 10, "Classes to generate when --src is not given.")
flags.DEFINE_string("out", None, "Where the converter writes (default: a temporary folder, removed afterwards).")
flags.DEFINE_integer("workers", 0, "Converter worker processes (0: all cores).")
flags.DEFINE_integer("repeats", 5, "Timed rounds (each method once per round); medians are reported.")
FLAGS = flags.FLAGS


def photo_like(index: int, width: int = 500, height: int = 375):
    """A JPEG-friendly picture: smooth colour regions, mid-frequency texture, sensor-like noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    colours = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    texture = Image.fromarray(rng.integers(0, 256, (height // 4, width // 4), dtype=np.uint8)).resize(
        (width, height), Image.BILINEAR
    )
    pixels = 0.7 * np.asarray(colours, np.float32) + 0.3 * np.asarray(texture, np.float32)[..., None]
    pixels += rng.normal(0, 6, (height, width, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _generate_one(args):
    index, path = args
    photo_like(index).save(path, quality=90)


def generate(root: str, num_images: int, num_classes: int, workers: int):
    jobs = []
    for i in range(num_images):
        folder = os.path.join(root, f"class_{i % num_classes:02d}")
        os.makedirs(folder, exist_ok=True)
        jobs.append((i, os.path.join(folder, f"{i:06d}.jpg")))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_generate_one, jobs, chunksize=32)


def read_and_hash(paths: list[str]) -> int:
    for path in paths:
        with open(path, "rb") as f:
            hashlib.sha256(f.read()).digest()
    return len(paths)


def files_under(root: str) -> list[str]:
    return sorted(os.path.join(d, name) for d, _, names in os.walk(root) for name in names)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv):
    del argv
    workers = FLAGS.workers or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        src = FLAGS.src
        if src is None:
            src = os.path.join(tmp, "src")
            print(f"generating {FLAGS.num_images} photo-like 500x375 JPEGs in {src} ...", flush=True)
            generate(src, FLAGS.num_images, FLAGS.num_classes, workers)
        paths = files_under(src)
        size = sum(os.path.getsize(p) for p in paths)
        out = FLAGS.out or os.path.join(tmp, "records")

        def run_converter():
            return convert.convert(src, out, overwrite=True, workers=workers, progress=False)

        chunks = [paths[i::workers] for i in range(workers)]
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(read_and_hash, chunks)  # warm-up: page cache, pool started
            summary = run_converter()  # warm-up: TF imported, the converter's forkserver started
            rounds = []
            for _ in range(FLAGS.repeats):  # interleaved, so a change in machine load hits every method alike
                rounds.append(
                    (
                        seconds(lambda: read_and_hash(paths)),
                        seconds(lambda: pool.map(read_and_hash, chunks)),
                        seconds(run_converter),
                    )
                )
    serial, parallel, converter = (statistics.median(times) for times in zip(*rounds))
    n = len(paths)
    print(f"{n} files, {size / n / 1024:.0f} KB average, {len(os.sched_getaffinity(0))} cores, {workers} workers")
    print(f"converter: {summary}")
    print(f"read+hash, 1 process:   {n / serial:8.0f} img/s")
    print(f"read+hash, {workers} processes: {n / parallel:8.0f} img/s")
    print(f"converter, {workers} workers:   {n / converter:8.0f} img/s  (whole convert() call: start-up to dataset.json)")
    ratio_serial = statistics.median(s / c for s, _, c in rounds)
    ratio_parallel = statistics.median(p / c for _, p, c in rounds)
    print(f"ratio converter / read+hash 1 process:   {ratio_serial:.2f}x (target >= 0.7x for JPEG sources)")
    print(f"ratio converter / read+hash {workers} processes: {ratio_parallel:.2f}x")


if __name__ == "__main__":
    app.run(main)
