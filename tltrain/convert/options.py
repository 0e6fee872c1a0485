"""What a conversion is asked to do: one dataclass whose fields are the converter's flags (help, choices and
ranges in the field metadata), checked before any file is touched, from the CLI and from Python alike."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tltrain.fields import Section, setting


class ConvertError(ValueError):
    """A one-line, user-facing reason why the conversion cannot run."""


@dataclasses.dataclass(frozen=True)
class Options(Section):
    """How images are split, stored and sharded, and how many processes do it."""

    error = ConvertError

    validation_fraction: float = setting(0.1, "Fraction of each class held out for validation.", ge=0, lt=1)
    test_fraction: float = setting(0.0, "Fraction of each class held out for test.", ge=0, lt=1)
    seed: int = setting(0, "Seed of the split, the record order and --max_per_class.", ge=0, le=2**63 - 1)
    max_per_class: int | None = setting(
        None, "Keep at most N training images per class, chosen by seed (validation/test kept).", ge=1)
    jpeg_quality: int = setting(95, "JPEG quality for the images that are re-encoded.", ge=1, le=100)
    store_png_as: Literal["jpeg", "png"] = setting("jpeg", "Format of converted non-JPEG sources (PNG, GIF, BMP, "
                                                   "WebP...).")
    max_side: int = setting(0, "Downsize images whose longer side exceeds this (0: keep sizes).", ge=0, le=65535)
    resize_for: int = setting(
        0, "Store images for training at this size: shorter side shrunk to what its crops need, 1.36x it (305 px "
        "for 224): the eval crop (0.875 of the shorter side) and the larger half of the Inception crops (area "
        "0.08-1.0) keep more pixels than they are resized to; every crop would need 3.5x, more than most photos "
        "have. Decoding fewer pixels feeds an accelerator faster (0: keep sizes).", ge=0, le=65535)
    raw_max_bytes: int = setting(
        4096, "Store images of at most this many pixel bytes (height x width x 1 or 3 channels; 28x28 gray is "
        "784) as raw uint8 pixels: for tiny images decoding a PNG costs more than the bytes it saves (0: never).",
        ge=0, le=1 << 20)
    num_shards: int = setting(0, "Shards per split (0: from --shard_size_mb).", ge=0, le=99999)
    shard_size_mb: float = setting(128.0, "Approximate shard size when --num_shards is 0.", gt=0, le=1e6)
    compression: Literal["none", "gzip"] = setting("none", "TFRecord compression (JPEGs barely compress).")
    workers: int = setting(0, "Processes reading and converting images (0: one per core).", ge=0, le=1024)

    def __post_init__(self):
        if isinstance(self.compression, str) and self.compression.lower() in ("", "none", "gzip"):
            object.__setattr__(self, "compression", self.compression.lower() or "none")
        self.validate()
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConvertError(f"--test_fraction={self.test_fraction}: validation + test must be < 1")

    @property
    def tf_compression(self) -> str:
        """The compression_type TensorFlow's record readers take: "" or "GZIP"."""
        return "GZIP" if self.compression == "gzip" else ""
