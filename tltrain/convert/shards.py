"""Shard staging and publishing: how many shards per split, records placed round-robin at byte offsets in
temporary files (the workers write them there), then renamed, or uploaded to gs://, only when all are complete,
so a killed run never leaves a shard that looks whole; and the preparation of --out."""

from __future__ import annotations

import collections
import hashlib
import math
import os
import posixpath
import re
import shutil

from tltrain import records
from tltrain.convert.images import Loaded
from tltrain.convert.options import ConvertError, Options
from tltrain.convert.policy import quotas
from tltrain.convert.scan import Scan
from tltrain.records import SPLITS

_OUR_FILES = re.compile(
    r"^(train|validation|test)-\d{5}(-of-\d{5})?\.tfrecord(\.incomplete)?$|^dataset\.json(\.incomplete)?$"
)


def plan_shards(found: Scan, options: Options) -> dict[str, int]:
    """Shards per split from the expected bytes (source sizes) or --num_shards, never more than images."""
    expected_bytes, expected_count = collections.Counter(), collections.Counter()
    if found.layout == "presplit":
        for source in found.sources:
            expected_bytes[source.split] += source.size
            expected_count[source.split] += 1
    else:
        by_class = collections.defaultdict(list)
        for source in found.sources:
            by_class[source.class_name].append(source.size)
        for sizes in by_class.values():
            validation, test = quotas(len(sizes), options)
            mean = sum(sizes) / len(sizes)
            for split, count in zip(SPLITS, (len(sizes) - validation - test, validation, test)):
                expected_bytes[split] += count * mean
                expected_count[split] += count
    shards = {}
    for split, count in expected_count.items():
        if count:
            wanted = options.num_shards or math.ceil(expected_bytes[split] / (options.shard_size_mb * 2**20))
            shards[split] = max(1, min(wanted, count))
    return shards


def _fingerprint(fields: dict, encoded_sha256: str) -> bytes:
    """What the dataset digest covers for one record: every field, and the image bytes by their sha256."""
    return hashlib.sha256(repr((encoded_sha256, fields)).encode()).digest()  # fields: one fixed key order


class SplitWriter:
    """One split's shards: places records round-robin at byte offsets in temporary files (workers write
    them there); seal() removes dropped records and compresses if asked, publish() renames/uploads the shards.

    The temporary shards are local files (in --out, or a local temporary folder for gs:// outputs), since
    workers write at offsets.
    """

    def __init__(self, out: str, staging: str, split: str, num_shards: int, compression: str):
        self.out, self.staging, self.split, self.compression = out, staging, split, compression
        self.ends = [None] * num_shards  # bytes placed per shard; None: file not created yet
        self.records = [[] for _ in range(num_shards)]  # per shard, (offset, size, fingerprint) per record
        self.dropped = collections.defaultdict(set)  # shard -> positions removed at the end (label conflicts)
        self.sealed = []  # [{file, count, sha256}] once sealed
        self.total = 0

    def temp_path(self, shard: int) -> str:
        return os.path.join(self.staging, f"{self.split}-{shard:05d}.tfrecord.incomplete")

    def place(self, fields: dict, loaded: Loaded) -> tuple[int, int, str, int]:
        """Appends one record; returns (shard, position) for drop(), and (path, offset) for the worker."""
        shard = self.total % len(self.ends)
        if self.ends[shard] is None:
            with open(self.temp_path(shard), "wb"):
                self.ends[shard] = 0
        offset = self.ends[shard]
        self.ends[shard] += loaded.record_size
        self.records[shard].append((offset, loaded.record_size, _fingerprint(fields, loaded.encoded_sha256)))
        self.total += 1
        return shard, len(self.records[shard]) - 1, self.temp_path(shard), offset

    def drop(self, shard: int, position: int):
        self.dropped[shard].add(position)

    def _rewrite_without(self, shard: int, positions: set[int]):
        path = self.temp_path(shard)
        with open(path, "rb") as f:
            data = f.read()
        kept = [record for position, record in enumerate(self.records[shard]) if position not in positions]
        with open(path, "wb") as f:
            f.write(b"".join(data[offset : offset + size] for offset, size, _ in kept))
        self.records[shard] = kept

    def seal(self):
        """Removes dropped records and compresses if asked: every non-empty shard complete under a temporary
        name of its final name, in the staging folder (nothing in --out replaced yet)."""
        for shard, positions in sorted(self.dropped.items()):
            self._rewrite_without(shard, positions)
        nonempty = [shard for shard, placed in enumerate(self.records) if placed]
        for index, shard in enumerate(nonempty):
            name = records.shard_name(self.split, index, len(nonempty))
            sealed = os.path.join(self.staging, name + ".incomplete")
            if self.compression:
                with open(self.temp_path(shard), "rb") as source, open(sealed, "wb") as raw:
                    with records.gzip_writer(raw) as target:
                        shutil.copyfileobj(source, target, 1 << 22)
                os.remove(self.temp_path(shard))
            else:
                os.replace(self.temp_path(shard), sealed)
            prints = [fingerprint for _, _, fingerprint in self.records[shard]]
            self.sealed.append({"file": name, "count": len(prints), "sha256": hashlib.sha256(b"".join(prints)).hexdigest()})
        for shard, end in enumerate(self.ends):
            if end is not None and not self.records[shard]:
                os.remove(self.temp_path(shard))

    def publish(self) -> list[dict]:
        """Renames (or uploads) the sealed shards to their final names in --out; returns [{file, count, sha256}]."""
        import tensorflow as tf

        for shard in self.sealed:
            sealed, final = os.path.join(self.staging, shard["file"] + ".incomplete"), posixpath.join(self.out, shard["file"])
            if "://" in final:  # a gs:// object appears only once complete
                tf.io.gfile.copy(sealed, final, overwrite=True)
                os.remove(sealed)
            else:
                os.replace(sealed, final)
        return self.sealed

    def abort(self):
        """Deletes the temporary shards (a failed run leaves no half-written files behind)."""
        temps = [self.temp_path(shard) for shard, end in enumerate(self.ends) if end is not None]
        for path in temps + [os.path.join(self.staging, shard["file"] + ".incomplete") for shard in self.sealed]:
            if os.path.exists(path):
                os.remove(path)


def _one_line(error: Exception) -> str:
    text = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0]


def prepare_out(out: str, src: str, overwrite: bool):
    """Creates --out, checks that it can be written, and deletes an interrupted run's temporary files; refuses
    finished records or foreign files unless --overwrite. Records already there are replaced only once the
    new ones are complete (replace_records): a failed run leaves them as they were.
    """
    import tensorflow as tf

    if "://" not in out and "://" not in src:
        real_out, real_src = os.path.realpath(out), os.path.realpath(src)
        if real_out == real_src or real_out.startswith(real_src + os.sep):
            raise ConvertError(f"--out {out} is inside --src {src}: its records would be read as images")
    try:
        if tf.io.gfile.exists(out) and not tf.io.gfile.isdir(out):
            raise ConvertError(f"--out {out}: is a file, not a folder")
        tf.io.gfile.makedirs(out)
        names = [name.rstrip("/") for name in tf.io.gfile.listdir(out)]
        probe = posixpath.join(out, "dataset.json.incomplete")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as error:
        raise ConvertError(f"--out {out}: cannot write there ({_one_line(error)})") from None
    foreign = [name for name in names if not _OUR_FILES.match(name)]
    if not overwrite and "dataset.json" in names:
        raise ConvertError(f"--out {out} already holds records (dataset.json): pass --overwrite to replace them")
    if not overwrite and foreign:
        raise ConvertError(f"--out {out} is not empty ({len(foreign)} other files, e.g. {foreign[0]}): use an empty folder")
    for name in names:
        if name.endswith(".incomplete") and _OUR_FILES.match(name):
            tf.io.gfile.remove(posixpath.join(out, name))


def replace_records(out: str):
    """Deletes the records in --out (dataset.json first: a folder without it reads as an interrupted run)."""
    import tensorflow as tf

    names = [name.rstrip("/") for name in tf.io.gfile.listdir(out)]
    for name in sorted(names, key=lambda name: name != "dataset.json"):
        if _OUR_FILES.match(name) and not name.endswith(".incomplete"):
            tf.io.gfile.remove(posixpath.join(out, name))
