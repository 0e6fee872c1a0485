"""dataset.json, typed: the classes, every split's shards and counts, and what identifies each split's
examples (its digest), as written by the converter and read by the trainer and the tools.

The one schema of the records themselves is tltrain.records; this is the one layout of the file that
describes them. No TensorFlow at import: the converter's processes use it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath

from tltrain import records
from tltrain.records import METADATA_FILE, SPLITS

VERSION = 1


def split_digest(digest: str, split: str) -> str:
    """A split's digest from the digest of the whole records folder."""
    return hashlib.sha256(f"{digest}\0{split}".encode()).hexdigest()


class MetadataError(ValueError):
    """A dataset.json that cannot be used: one line naming the file."""


@dataclasses.dataclass(frozen=True)
class Shard:
    file: str  # relative to the records folder
    count: int


@dataclasses.dataclass(frozen=True)
class Split:
    count: int
    per_class: tuple[int, ...]  # in label order
    shards: tuple[Shard, ...]
    digest: str  # identifies this split's examples (feature-cache keys depend on it)


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """One records folder's dataset.json. `provenance`: how it was made (converter options, source), kept as
    written; `skipped`: every source file not written, with its reason."""

    class_names: tuple[str, ...]
    splits: dict[str, Split]
    compression: str = ""  # "" or "GZIP", as tf.data's readers take it
    digest: str = ""  # identifies every record of every split
    provenance: dict = dataclasses.field(default_factory=dict)
    skipped: tuple[dict, ...] = ()
    records_dir: str = dataclasses.field(default="", compare=False)  # where it was read from; not written

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def resize_for(self) -> int:
        """The image size the converter stored the images for (--resize_for); 0: stored at their own size."""
        return int(self.provenance.get("resize_for") or 0)

    @property
    def path(self) -> str:
        return posixpath.join(self.records_dir, METADATA_FILE)

    def shard_paths(self, split: str) -> list[str]:
        """The split's shard files under records_dir; ValueError naming dataset.json for a split it lacks."""
        if split not in self.splits:
            raise ValueError(f"{self.path}: no split '{split}' (splits: {', '.join(sorted(self.splits)) or 'none'})")
        return [posixpath.join(self.records_dir, shard.file) for shard in self.splits[split].shards]

    @classmethod
    def build(cls, class_names, splits: dict[str, tuple[list[int], list[Shard]]], digest: str, **fields):
        """From per-class counts and shards per split (in SPLITS order); each split's digest from `digest`."""
        return cls(tuple(class_names), {
            name: Split(sum(per_class), tuple(per_class), tuple(shards), split_digest(digest, name))
            for name in SPLITS if name in splits for per_class, shards in [splits[name]]
        }, digest=digest, **fields)

    def verify(self) -> list[str]:
        """Reads every shard: its framing, both checksums of every record, and its count against dataset.json.
        One line per damaged or missing shard; [] when all are intact."""
        problems = []
        for name, split in self.splits.items():
            for path, shard in zip(self.shard_paths(name), split.shards):
                if not records.file_exists(path):
                    problems.append(f"{path}: missing (listed in {METADATA_FILE})")
                    continue
                try:
                    found = records.count_records(path, self.compression)
                except records.DamagedRecords as error:
                    problems.append(str(error))
                    continue
                if found != shard.count:
                    problems.append(f"{path}: holds {found} records, {METADATA_FILE} says {shard.count}")
        return problems

    def read_failure(self, error: Exception) -> str | None:
        """The one line for a read of these records that failed in TensorFlow (a shard cut short, corrupted,
        or holding other than its count here: TF's error names no file): the damaged shards, found by reading
        them all; None when all are intact or the error is another one."""
        import tensorflow as tf

        counts = isinstance(error, tf.errors.FailedPreconditionError) and "expected to contain" in str(error)
        if not (isinstance(error, tf.errors.DataLossError) or counts) or not (problems := self.verify()):
            return None
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{problems[0]}{more}; {self.rebuild_advice()}"

    def rebuild_advice(self) -> str:
        return f"rebuild the records (tools/make_tfrecords.py --verify {self.records_dir} checks them)"

    # -------------------------------------------------------------------------------------------- json

    def to_json(self) -> dict:
        splits = {
            name: {"count": split.count, "per_class": list(split.per_class), "digest": split.digest,
                   "shards": [dataclasses.asdict(shard) for shard in split.shards]}
            for name, split in self.splits.items()
        }
        return {"version": VERSION, "class_names": list(self.class_names), "num_classes": self.num_classes,
                "compression": self.compression, "splits": splits, **self.provenance,
                "skipped": list(self.skipped), "digest": self.digest}

    @classmethod
    def from_json(cls, value, path: str = METADATA_FILE) -> DatasetMetadata:
        """Checks the layout and the counts; MetadataError naming `path` and what is wrong."""

        def need(ok, what: str):
            if not ok:
                raise MetadataError(f"{path}: {what}; rebuild the records with tools/make_tfrecords.py")

        need(isinstance(value, dict) and value, "not a dataset.json (no class_names, splits)")
        missing = [key for key in ("class_names", "splits") if key not in value]
        need(not missing, f"no {', '.join(missing)}")
        names = value["class_names"]
        need(isinstance(names, list) and names and all(isinstance(n, str) and n for n in names),
             "class_names is not a list of names")
        need(value.get("num_classes", len(names)) == len(names), f"num_classes is not {len(names)}")
        need(isinstance(value["splits"], dict), "splits is not a mapping")
        digest = str(value.get("digest", ""))
        splits = {}
        for name, split in value["splits"].items():
            try:
                shards = tuple(Shard(str(s["file"]), int(s["count"])) for s in split["shards"])
                per_class, count = tuple(int(c) for c in split["per_class"]), int(split["count"])
            except (KeyError, TypeError, ValueError) as error:
                raise MetadataError(f"{path}: split '{name}' is malformed ({type(error).__name__}: {error})") from None
            need(len(per_class) == len(names), f"split '{name}' has {len(per_class)} per-class counts")
            need(sum(per_class) == count == sum(s.count for s in shards),
                 f"split '{name}' counts disagree (count {count}, per_class {sum(per_class)}, "
                 f"shards {sum(s.count for s in shards)})")
            own = split.get("digest") or split_digest(digest, name)
            splits[name] = Split(count, per_class, shards, own)
        known = {"version", "class_names", "num_classes", "compression", "splits", "skipped", "digest"}
        return cls(tuple(names), splits, str(value.get("compression") or ""), digest,
                   {key: item for key, item in value.items() if key not in known},
                   tuple(value.get("skipped") or ()))

    # -------------------------------------------------------------------------------------- read / write

    @classmethod
    def read(cls, records_dir: str) -> DatasetMetadata:
        """records_dir/dataset.json (local or gs://); FileNotFoundError or MetadataError naming the file."""
        path = posixpath.join(records_dir, METADATA_FILE)
        if not records.file_exists(path):
            raise FileNotFoundError(f"{path}: no {METADATA_FILE}; build records with tools/make_tfrecords.py")
        try:
            with records.open_file(path) as f:
                value = json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MetadataError(f"{path}: not valid JSON ({error}); rebuild the records with "
                                "tools/make_tfrecords.py") from None
        return dataclasses.replace(cls.from_json(value, path), records_dir=records_dir)

    def write(self, records_dir: str) -> None:
        """records_dir/dataset.json, written under a temporary name and renamed: it appears only complete."""
        import tensorflow as tf

        path = posixpath.join(records_dir, METADATA_FILE)
        with tf.io.gfile.GFile(path + ".incomplete", "w") as f:
            f.write(json.dumps(self.to_json(), indent=2) + "\n")
        tf.io.gfile.rename(path + ".incomplete", path, overwrite=True)

    # -------------------------------------------------------------------------------------------- subset

    def subset(self, split: str, shards: list[Shard], per_class: list[int], note: str, **provenance) -> DatasetMetadata:
        """This data set with `split` replaced by a part of it (`shards`, `per_class`), the other splits kept;
        the part's digest is its parent's and `note`, so caches keyed by the other splits stay valid."""
        parent = self.splits[split]
        digest = hashlib.sha256(f"{parent.digest}\0{note}".encode()).hexdigest()
        splits = {**self.splits, split: Split(sum(per_class), tuple(per_class), tuple(shards), digest)}
        splits = {name: splits[name] for name in SPLITS if name in splits}
        return dataclasses.replace(
            self, splits=splits, digest=hashlib.sha256("".join(s.digest for s in splits.values()).encode()).hexdigest(),
            provenance={**self.provenance, **provenance})
