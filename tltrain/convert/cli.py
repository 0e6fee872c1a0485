"""`tools/make_tfrecords.py` / `tltrain-make-tfrecords` / `python -m tltrain.convert`: absl flags generated
from the fields of Command and Options (help, choices and ranges in their metadata), one line per error."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import sys
import typing

from tltrain.convert.options import ConvertError, Options
from tltrain.fields import Section, define_flag, setting
from tltrain.records import METADATA_FILE

PROGRAM = "make_tfrecords"


@dataclasses.dataclass(frozen=True)
class Command(Section):
    """What to convert where, and how the command ends; the conversion itself is Options."""

    error = ConvertError

    src: str = setting("", "Images: src/<class>/**/<image>, or src/{train,validation,test}/<class>/**.")
    out: str = setting("", "Output folder for the shards and dataset.json (local or gs://).")
    overwrite: bool = setting(False, "Replace the records already in --out.")
    strict: bool = setting(False, "Exit with status 1 if any file but hidden/system files was skipped.")
    verify: str = setting("", "Instead of converting: read every shard of this records folder and check its framing, "
                              "checksums and counts against its dataset.json (exit status 1 if any is damaged).")

    def __post_init__(self):
        self.validate()
        for name in ("src", "out"):
            if not getattr(self, name) and not self.verify:
                raise ConvertError(f"--{name}: required")


def define_flags(classes=(Command, Options)) -> None:
    """One absl flag per field, named like it; listed by --help of whichever program runs run()."""
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            define_flag(field.name, field, hints[field.name], module_name=sys.argv[0])


def from_flags(cls):
    """The dataclass the parsed flags describe (its checks raise ConvertError naming the flag)."""
    from absl import flags

    return cls(**{field.name: flags.FLAGS[field.name].value for field in dataclasses.fields(cls)})


def print_skipped(skipped: list[dict], out: str) -> list[dict]:
    """The skipped files worth a look (not hidden ones), the first 20 on stderr; returns them all."""
    notable = [entry for entry in skipped if entry["reason"] != "hidden"]
    for entry in notable[:20]:
        detail = f" ({entry['detail']})" if "detail" in entry else ""
        print(f"  skipped {entry['file']}: {entry['reason']}{detail}", file=sys.stderr)
    if len(notable) > 20:
        print(f"  ... {len(notable) - 20} more in {posixpath.join(out, 'dataset.json')}", file=sys.stderr)
    return notable


def _verify(records_dir: str) -> int:
    from tltrain.dataset_metadata import DatasetMetadata

    try:
        metadata = DatasetMetadata.read(records_dir)
    except (FileNotFoundError, ValueError) as error:
        raise ConvertError(str(error)) from None
    problems = metadata.verify()
    for problem in problems:
        print(f"{PROGRAM}: damaged: {problem}", file=sys.stderr)
    shards = sum(len(split.shards) for split in metadata.splits.values())
    records = sum(split.count for split in metadata.splits.values())
    verdict = f"{len(problems)} of {shards} shards damaged" if problems else "all intact"
    print(f"{records_dir}: {shards} shards, {records} records in {METADATA_FILE}: {verdict}")
    return 1 if problems else 0


def _main(argv: list[str]) -> int:
    from absl import app

    from tltrain.convert.pipeline import convert

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        command, options = from_flags(Command), from_flags(Options)
        if command.verify:
            return _verify(command.verify)
        summary = convert(command.src, command.out, overwrite=command.overwrite, **dataclasses.asdict(options))
    except ConvertError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1
    notable = print_skipped(summary.skipped, command.out)
    if summary.links_outside:
        first = summary.links_outside[0]
        print(f"  note: {len(summary.links_outside)} files read through links that leave --src, e.g. {first['file']} "
              f"-> {first['target']} (all listed in dataset.json)", file=sys.stderr)
    print(summary)
    if command.strict and notable:
        print(f"{PROGRAM}: error: --strict: {len(notable)} files skipped", file=sys.stderr)
        return 1
    return 0


def run(argv: list[str] | None = None):
    """Console entry point (tltrain-make-tfrecords, tools/make_tfrecords.py); --flagfile works."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app

    define_flags()
    app.run(_main, argv)
