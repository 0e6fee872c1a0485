"""`tools/make_tfrecords.py` / `tltrain-make-tfrecords` / `python -m tltrain.convert`: absl flags generated
from the fields of Command and Options (help, choices and ranges in their metadata), one line per error."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import sys
import typing
from typing import Literal

from tltrain.convert.options import ConvertError, Options, check_fields, option, scalar_type

PROGRAM = "make_tfrecords"


@dataclasses.dataclass(frozen=True)
class Command:
    """What to convert where, and how the command ends; the conversion itself is Options."""

    src: str = option("", "Images: src/<class>/**/<image>, or src/{train,validation,test}/<class>/**.")
    out: str = option("", "Output folder for the shards and dataset.json (local or gs://).")
    overwrite: bool = option(False, "Replace the records already in --out.")
    strict: bool = option(False, "Exit with status 1 if any file but hidden/system files was skipped.")

    def __post_init__(self):
        check_fields(self)
        for name in ("src", "out"):
            if not getattr(self, name):
                raise ConvertError(f"--{name}: required")


def define_flags(classes=(Command, Options)) -> None:
    """One absl flag per field, named like it; listed by --help of whichever program runs run()."""
    from absl import flags

    for cls in classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind, args = scalar_type(hints[field.name]), (field.name, field.default, field.metadata["help"])
            if typing.get_origin(kind) is Literal:
                flags.DEFINE_enum(field.name, field.default, list(typing.get_args(kind)), args[2], module_name=sys.argv[0])
                continue
            define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
                kind, flags.DEFINE_string)
            define(*args, module_name=sys.argv[0])


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


def _main(argv: list[str]) -> int:
    from absl import app

    from tltrain.convert.pipeline import convert

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        command, options = from_flags(Command), from_flags(Options)
        summary = convert(command.src, command.out, overwrite=command.overwrite, **dataclasses.asdict(options))
    except ConvertError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1
    notable = print_skipped(summary.skipped, command.out)
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
