"""dataset.json assembly: what was written (splits, shards, per-class counts, a digest of every record) and
what was skipped with its reason, and the one-line summary the CLI prints."""

from __future__ import annotations

import collections
import dataclasses
import hashlib

from tltrain.convert.options import Options
from tltrain.convert.policy import Assembler
from tltrain.convert.scan import Scan
from tltrain.dataset_metadata import DatasetMetadata, Shard
from tltrain.records import SPLITS


def build_metadata(src: str, found: Scan, options: Options, assembler: Assembler, shards: dict) -> DatasetMetadata:
    """dataset.json of the conversion; digest = sha256 over the compression, shard names and record hashes."""
    compression = options.tf_compression
    digest = hashlib.sha256(compression.encode())
    for split in SPLITS:
        for shard in shards.get(split, ()):
            digest.update(f"{shard['file']}\0{shard['sha256']}\n".encode())
    splits = {
        split: (assembler.per_class[split], [Shard(shard["file"], shard["count"]) for shard in shards[split]])
        for split in SPLITS if shards.get(split)
    }
    presplit = found.layout == "presplit"
    provenance = {
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
    }
    if found.links_outside:
        provenance["links_outside_src"] = found.links_outside
    skipped = tuple(sorted(assembler.skipped, key=lambda entry: entry["file"]))
    return DatasetMetadata.build(found.class_names, splits, digest.hexdigest(), compression=compression,
                                 provenance=provenance, skipped=skipped)


@dataclasses.dataclass
class Summary:
    written: int
    skipped: list[dict]
    metadata: DatasetMetadata

    @property
    def links_outside(self) -> list[dict]:
        """Files read through links that leave --src: {file, target}."""
        return self.metadata.provenance.get("links_outside_src", [])

    def reasons(self) -> collections.Counter:
        return collections.Counter(entry["reason"] for entry in self.skipped)

    def __str__(self) -> str:
        counts = sorted(self.reasons().items(), key=lambda item: (-item[1], item[0]))
        details = ", ".join(f"{count} {reason}" for reason, count in counts)
        return f"written {self.written}, skipped {len(self.skipped)}" + (f": {details}" if details else "")
