#!/usr/bin/env python3
"""Converter speed: images/second of tltrain.convert against reading and hashing the same files, same run.

    python tools/bench_convert.py                  # 2000 generated photo-like 500x375 JPEGs
    python tools/bench_convert.py --src data/      # your own folder (src/<class>/...)

Reading and hashing every file is the least any converter must do (the records need the bytes, the
duplicate check needs the hash); the ratio says what the rest costs. The baseline reads with the
converter's own read (convert.read_file: one read() of the file's size) and hashes with sha256, in one
process (the plain loop a converter must beat) and on as many processes as the converter gets. Both wall
time and CPU time (all processes of each method, workers included) are reported: on a loaded machine the
CPU time per image is the steadier measure. Every method runs once untimed first (page cache, TF import,
the converter's forkserver), then the methods take turns, and the median of each is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time

from absl import app, flags

from shared import write_photo_folder
from tltrain import convert

flags.DEFINE_string("src", None, "Folder to convert (src/<class>/...); default: generate photo-like JPEGs.")
flags.DEFINE_integer("num_images", 2000, "Images to generate when --src is not given.")
flags.DEFINE_integer("num_classes", 10, "Classes to generate when --src is not given.")
flags.DEFINE_string("out", None, "Where the converter writes (default: a temporary folder, removed afterwards).")
flags.DEFINE_integer("workers", 0, "Converter worker processes (0: all cores).")
flags.DEFINE_integer("repeats", 5, "Timed rounds (each method once per round); medians are reported.")
FLAGS = flags.FLAGS


def read_and_hash(paths: list[str]) -> int:
    for path in paths:
        hashlib.sha256(convert.read_file(path)).digest()
    return len(paths)


def files_under(root: str) -> list[str]:
    return sorted(os.path.join(d, name) for d, _, names in os.walk(root) for name in names)


def cpu_seconds() -> float:
    """CPU time of this process and every process under it, living or reaped (pool and converter workers)."""
    import psutil

    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def measure(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all processes) of fn()."""
    cpu, start = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - start, cpu_seconds() - cpu


def main(argv):
    del argv
    workers = FLAGS.workers or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        src = FLAGS.src
        if src is None:
            src = os.path.join(tmp, "src")
            print(f"generating {FLAGS.num_images} photo-like 500x375 JPEGs in {src} ...", flush=True)
            write_photo_folder(src, FLAGS.num_images, FLAGS.num_classes, workers)
        paths = files_under(src)
        size = sum(os.path.getsize(p) for p in paths)
        out = FLAGS.out or os.path.join(tmp, "records")

        def run_converter():
            return convert.convert(src, out, workers=workers, progress=False)

        def remove_records():  # untimed: the converter's work is converting, not deleting the last round's output
            shutil.rmtree(out, ignore_errors=True)

        chunks = [paths[i::workers] for i in range(workers)]
        load_before = os.getloadavg()
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(read_and_hash, chunks)  # warm-up: page cache, pool started
            remove_records()
            summary = run_converter()  # warm-up: TF imported, the converter's forkserver started
            rounds = []
            for _ in range(FLAGS.repeats):  # interleaved, so a change in machine load hits every method alike
                remove_records()
                rounds.append(
                    (
                        measure(lambda: read_and_hash(paths)),
                        measure(lambda: pool.map(read_and_hash, chunks)),
                        measure(run_converter),
                    )
                )
        load_after = os.getloadavg()
    n = len(paths)
    (serial, serial_cpu), (parallel, parallel_cpu), (converter, converter_cpu) = (
        (statistics.median(wall for wall, _ in times), statistics.median(cpu for _, cpu in times))
        for times in zip(*rounds)
    )
    print(f"{n} files, {size / n / 1024:.0f} KB average, {len(os.sched_getaffinity(0))} cores, {workers} workers")
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"converter: {summary}")
    print("                                 img/s   CPU us/img (all processes)")
    print(f"read+hash, 1 process:        {n / serial:8.0f}   {1e6 * serial_cpu / n:6.0f}")
    print(f"read+hash, {workers} processes:      {n / parallel:8.0f}   {1e6 * parallel_cpu / n:6.0f}")
    print(f"converter, {workers} workers:        {n / converter:8.0f}   {1e6 * converter_cpu / n:6.0f}  (whole convert() call)")
    ratio = {name: statistics.median(r[i][0] / r[2][0] for r in rounds) for i, name in enumerate(["1", "n"])}
    cpu_ratio = statistics.median(min(r[0][1], r[1][1]) / r[2][1] for r in rounds)
    print(f"wall ratio, converter ({workers} workers) / read+hash 1 process: {ratio['1']:.2f}x (target >= 0.7x for JPEGs)")
    print(f"wall ratio, converter ({workers} workers) / read+hash {workers} processes: {ratio['n']:.2f}x")
    print(f"CPU-time ratio, read+hash / converter (per image, all processes): {cpu_ratio:.2f}x")


if __name__ == "__main__":
    app.run(main)
