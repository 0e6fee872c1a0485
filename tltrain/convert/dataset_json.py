"""dataset.json assembly: what was written (splits, shards, per-class counts, a digest of every record) and
what was skipped with its reason, and the one-line summary the CLI prints."""

from __future__ import annotations

import collections
import dataclasses
import hashlib

from tltrain.convert.options import Options
from tltrain.convert.policy import Assembler
from tltrain.convert.scan import Scan
from tltrain.records import SPLITS


def build_metadata(src: str, found: Scan, options: Options, assembler: Assembler, shards: dict, compression: str):
    """dataset.json (layout in the project contracts); digest = sha256 over shard names and record hashes."""
    digest = hashlib.sha256(compression.encode())
    splits = {}
    for split in SPLITS:
        if shards.get(split):
            for shard in shards[split]:
                digest.update(f"{shard['file']}\0{shard.pop('sha256')}\n".encode())
            counts = assembler.per_class[split]
            splits[split] = {"count": sum(counts), "per_class": counts, "shards": shards[split]}
    presplit = found.layout == "presplit"
    return {
        "version": 1,
        "class_names": found.class_names,
        "num_classes": len(found.class_names),
        "compression": compression,
        "splits": splits,
        "seed": options.seed,
        "validation_fraction": None if presplit else options.validation_fraction,
        "test_fraction": None if presplit else options.test_fraction,
        "max_per_class": options.max_per_class,
        "source": src,
        "layout": found.layout,
        "jpeg_quality": options.jpeg_quality,
        "store_png_as": options.store_png_as,
        "max_side": options.max_side,
        "resize_for": options.resize_for,
        "raw_max_bytes": options.raw_max_bytes,
        "skipped": sorted(assembler.skipped, key=lambda entry: entry["file"]),
        "digest": digest.hexdigest(),
    }


@dataclasses.dataclass
class Summary:
    written: int
    skipped: list[dict]
    metadata: dict

    def reasons(self) -> collections.Counter:
        return collections.Counter(entry["reason"] for entry in self.skipped)

    def __str__(self) -> str:
        counts = sorted(self.reasons().items(), key=lambda item: (-item[1], item[0]))
        details = ", ".join(f"{count} {reason}" for reason, count in counts)
        return f"written {self.written}, skipped {len(self.skipped)}" + (f": {details}" if details else "")
