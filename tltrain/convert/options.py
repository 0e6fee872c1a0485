"""What a conversion is asked to do: one dataclass whose fields are the converter's flags (help, choices and
ranges in the field metadata), checked before any file is touched, from the CLI and from Python alike."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Literal


class ConvertError(ValueError):
    """A one-line, user-facing reason why the conversion cannot run."""


def option(default, help: str, *, low=None, high=None, low_open=False, high_open=False, note: str = ""):
    """A dataclass field carrying its flag's help and allowed range ([low, high], open ends as told)."""
    bounds = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "note": note}
    return dataclasses.field(default=default, metadata={"help": help, **bounds})


def _rule(metadata) -> str:
    low, high = metadata["low"], metadata["high"]
    if low is not None and high is not None:
        rule = f"must be in {'(' if metadata['low_open'] else '['}{low}, {high}{')' if metadata['high_open'] else ']'}"
    elif low is not None:
        rule = f"must be {'>' if metadata['low_open'] else '>='} {low}"
    else:
        rule = f"must be {'<' if metadata['high_open'] else '<='} {high}"
    return rule + (f" ({metadata['note']})" if metadata["note"] else "")


def _in_range(value, metadata) -> bool:
    low, high = metadata["low"], metadata["high"]
    if isinstance(value, float) and not math.isfinite(value):
        return False
    above = low is None or (value > low if metadata["low_open"] else value >= low)
    below = high is None or (value < high if metadata["high_open"] else value <= high)
    return above and below


def check_fields(instance) -> None:
    """ConvertError naming the flag for a value of the wrong type, outside its range or not among its choices."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value, kind = getattr(instance, field.name), scalar_type(hints[field.name])
        if value is None and type(None) in typing.get_args(hints[field.name]):
            continue
        choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
        if choices is not None:
            if value not in choices:
                raise ConvertError(f"--{field.name}={value}: must be one of {', '.join(choices)}")
            continue
        numeric = kind in (int, float) and not isinstance(value, bool)
        if not isinstance(value, kind) and not (kind is float and isinstance(value, int) and numeric):
            raise ConvertError(f"--{field.name}={value!r}: must be {'a number' if numeric else kind.__name__}")
        if numeric and (field.metadata.get("low") is not None or field.metadata.get("high") is not None):
            if not _in_range(value, field.metadata):
                raise ConvertError(f"--{field.name}={value}: {_rule(field.metadata)}")


def scalar_type(hint):
    """`int | None` -> int; other hints unchanged."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if typing.get_origin(hint) is not Literal and len(args) == 1 else hint


@dataclasses.dataclass(frozen=True)
class Options:
    """How images are split, stored and sharded, and how many processes do it."""

    validation_fraction: float = option(
        0.1, "Fraction of each class held out for validation.", low=0, high=1, high_open=True)
    test_fraction: float = option(0.0, "Fraction of each class held out for test.", low=0, high=1, high_open=True)
    seed: int = option(0, "Seed of the split, the record order and --max_per_class.", low=0, high=2**63 - 1)
    max_per_class: int | None = option(
        None, "Keep at most N training images per class, chosen by seed (validation/test kept).", low=1)
    jpeg_quality: int = option(95, "JPEG quality for the images that are re-encoded.", low=1, high=100)
    store_png_as: Literal["jpeg", "png"] = option("jpeg", "Format of converted non-JPEG sources (PNG, GIF, BMP, WebP...).")
    max_side: int = option(
        0, "Downsize images whose longer side exceeds this (0: keep sizes).", low=0, high=65535, note="0: keep the size")
    num_shards: int = option(
        0, "Shards per split (0: from --shard_size_mb).", low=0, high=99999, note="0: from --shard_size_mb")
    shard_size_mb: float = option(128.0, "Approximate shard size when --num_shards is 0.", low=0, low_open=True, high=1e6)
    compression: Literal["none", "gzip"] = option("none", "TFRecord compression (JPEGs barely compress).")
    workers: int = option(0, "Processes reading and converting images (0: one per core).", low=0, high=1024)

    def __post_init__(self):
        if isinstance(self.compression, str) and self.compression.lower() in ("", "none", "gzip"):
            object.__setattr__(self, "compression", self.compression.lower() or "none")
        check_fields(self)
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConvertError(f"--test_fraction={self.test_fraction}: validation + test must be < 1")

    @property
    def tf_compression(self) -> str:
        """The compression_type TensorFlow's record readers take: "" or "GZIP"."""
        return "GZIP" if self.compression == "gzip" else ""
