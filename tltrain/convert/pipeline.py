"""convert(): scan, then one pass over the files in seeded order (workers load and frame, the main process
places), then publish the shards and write dataset.json last. TensorFlow is imported only here, after the scan,
while the worker processes start."""

from __future__ import annotations

import os
import random
import shutil
import tempfile

from tqdm import tqdm

from tltrain.convert.dataset_json import Summary, build_metadata
from tltrain.convert.options import Options
from tltrain.convert.policy import Assembler
from tltrain.convert.scan import scan
from tltrain.convert.shards import SplitWriter, plan_shards, prepare_out, replace_records
from tltrain.convert.workers import Workers


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def convert(src: str, out: str, *, overwrite: bool = False, progress: bool = True, **options) -> Summary:
    """Converts src into shards + dataset.json under out; returns what was written and skipped.

    `options` are the fields of Options (`workers`: processes reading and converting images; 0: one per
    core, 1: in this process). Raises ConvertError with a one-line message for unusable flags, sources or
    outputs; a failed run leaves no shards, only an interrupted one leaves temporary files (replaced by the
    next run).
    """
    options = Options(**options)
    found = scan(src)  # before TF is imported: a bad --src fails in milliseconds
    pool = Workers(options.workers or _cores(), options)  # worker processes start while TF imports
    writers, staging = {}, out
    try:
        import tensorflow  # noqa: F401  (imported while the worker processes start)

        prepare_out(out, src, overwrite)
        if "://" in out:  # workers write at offsets: shards are assembled locally, then uploaded
            staging = tempfile.mkdtemp(prefix="tltrain-records-")
        for split, count in plan_shards(found, options).items():
            writers[split] = SplitWriter(out, staging, split, count, options.tf_compression)
        assembler = Assembler(found, options, writers, pool)
        order = list(found.sources)  # walk order: sorted folders, sorted names
        random.Random(options.seed).shuffle(order)
        jobs = [assembler.job(key, source) for key, source in enumerate(order)]
        bar = tqdm(pool.map(jobs), total=len(jobs), unit="img", disable=None if progress else True)  # None: a tty
        for job, result in bar:
            assembler.add(order[job[0]], job, result)
        pool.close()  # every record is written
        assembler.resolve_conflicts()
        assembler.check(src)
        for writer in writers.values():
            writer.seal()
        replace_records(out)  # the new records are complete: only now are the old ones deleted
        shards = {split: writer.publish() for split, writer in writers.items()}
    except BaseException:
        pool.close()  # before the files its workers write into are removed
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        if staging != out:
            shutil.rmtree(staging, ignore_errors=True)
    metadata = build_metadata(src, found, options, assembler, shards)
    metadata.write(out)
    return Summary(sum(split.count for split in metadata.splits.values()), list(metadata.skipped), metadata)
