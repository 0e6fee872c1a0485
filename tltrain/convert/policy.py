"""Split, dedupe and conflict policy: which split each valid image goes to (stratified, seeded), which copy of
identical bytes is kept, and why the same bytes under two classes keep none."""

from __future__ import annotations

import collections
import posixpath
from typing import TYPE_CHECKING

from tltrain.convert.images import Loaded
from tltrain.convert.options import ConvertError, Options
from tltrain.convert.scan import Scan, Source
from tltrain.convert.workers import Workers, record_fields
from tltrain.records import SPLITS

if TYPE_CHECKING:
    from tltrain.convert.shards import SplitWriter


def quotas(count: int, options: Options) -> tuple[int, int]:
    """(validation, test) images of a class of `count`, rounded half up, leaving at least one for training."""
    validation = int(count * options.validation_fraction + 0.5)
    test = int(count * options.test_fraction + 0.5)
    while count and validation + test >= count and validation + test > 0:
        if test:
            test -= 1
        else:
            validation -= 1
    return validation, test


class Assembler:
    """Decides, file by file in seeded order, what becomes of each loaded image, and writes the records.

    Folder layout: the first round(n * fraction) valid, unique images of a class (n = its candidate files)
    go to validation, then test, the rest to train, so the split is stratified and random by seed. The first
    copy of identical bytes is the only one stored; the same bytes under two classes drop every copy.
    """

    def __init__(self, found: Scan, options: Options, writers: dict[str, SplitWriter], workers: Workers):
        self.found, self.options, self.writers, self.workers = found, options, writers, workers
        self.label = {name: index for index, name in enumerate(found.class_names)}
        sizes = collections.Counter(source.class_name for source in found.sources)
        self.quotas = {name: quotas(sizes[name], options) for name in found.class_names}
        self.taken = collections.Counter()  # valid, unique images per class so far
        self.per_class = {split: [0] * len(found.class_names) for split in SPLITS}
        self.valid_in_folder = collections.Counter()
        self.first_copy = {}  # source sha256 -> (Source, (split, shard, position) or None)
        self.conflicts = set()
        self.skipped = list(found.skipped)
        self.skipped_by_sha = collections.defaultdict(list)

    def _skip(self, source: Source, sha256: str, reason: str, detail: str = ""):
        entry = {"file": source.rel, "reason": reason}
        if detail:
            entry["detail"] = detail
        self.skipped.append(entry)
        if sha256:
            self.skipped_by_sha[sha256].append(entry)

    def _split(self, source: Source) -> str:
        if source.split:
            return source.split
        validation, test = self.quotas[source.class_name]
        k = self.taken[source.class_name]
        self.taken[source.class_name] += 1
        return "validation" if k < validation else "test" if k < validation + test else "train"

    def job(self, key: int, source: Source) -> tuple:
        """What a worker needs to make the record of `source`: (key, path, fields known before reading)."""
        fields = {"label": self.label[source.class_name], "class_name": source.class_name, "filename": source.rel}
        return key, source.path, fields

    def add(self, source: Source, job: tuple, loaded: Loaded):
        if loaded.reason:
            self._skip(source, loaded.sha256, loaded.reason, loaded.detail)
        else:  # the worker holding the record writes it, or frees it (path None)
            self.workers.place(job[0], *self._place(source, job, loaded))

    def _place(self, source: Source, job: tuple, loaded: Loaded) -> tuple[str | None, int]:
        self.valid_in_folder[source.folder] += 1
        if loaded.sha256 in self.first_copy:
            first = self.first_copy[loaded.sha256][0]
            if first.class_name != source.class_name:
                self.conflicts.add(loaded.sha256)
            self._skip(source, loaded.sha256, "duplicate", f"same bytes as {first.rel}")
            return None, 0
        split, index = self._split(source), self.label[source.class_name]
        cap = self.options.max_per_class
        if split == "train" and cap and self.per_class[split][index] >= cap:
            self.first_copy[loaded.sha256] = (source, None)
            self._skip(source, loaded.sha256, "over max_per_class")
            return None, 0
        shard, position, path, offset = self.writers[split].place(record_fields(job[2], loaded), loaded)
        self.first_copy[loaded.sha256] = (source, (split, shard, position))
        self.per_class[split][index] += 1
        return path, offset

    def resolve_conflicts(self):
        """The same bytes under two classes: no copy's label can be trusted, so none is kept."""
        for sha in sorted(self.conflicts):
            source, location = self.first_copy[sha]
            copies = sorted({source.rel} | {entry["file"] for entry in self.skipped_by_sha[sha]})
            detail = "same bytes in " + ", ".join(copies)
            for entry in self.skipped_by_sha[sha]:
                entry.update(reason="label conflict", detail=detail)
            if location is not None:
                split, shard, position = location
                self.writers[split].drop(shard, position)
                self.per_class[split][self.label[source.class_name]] -= 1
                self.skipped.append({"file": source.rel, "reason": "label conflict", "detail": detail})

    def check(self, src: str):
        for folder in self.found.folders:
            if not self.valid_in_folder[folder]:
                bad = sum(entry["file"].startswith(folder + "/") for entry in self.skipped)
                raise ConvertError(f"class folder {posixpath.join(src, folder)} has no images ({bad} files skipped)")
        if not any(sum(counts) for counts in self.per_class.values()):
            raise ConvertError(f"--src {src}: nothing could be written ({len(self.skipped)} files skipped)")
