"""The one TFRecord schema and its framing, shared by the writer (tltrain.convert) and the readers (dataset.json,
which describes a folder of them, is tltrain.dataset_metadata).

Compatible with the TensorFlow Model Garden classification decoder and the Cloud TPU ImageNet records.
"""

from __future__ import annotations

import functools
import gzip
import math
import struct

import google_crc32c

METADATA_FILE = "dataset.json"
SPLITS = ("train", "validation", "test")
# image/format of records that hold pixels, not an encoded file: image/encoded is height * width * channels uint8
# values, row-major (HWC), channels 1 or 3. Cheaper to read than to decode for tiny images (Fashion-MNIST's 28 px).
RAW_FORMAT = "raw"

# key -> (bytes or int, default when absent). TensorFlow is imported only by the readers: the converter's
# worker processes encode records with this module and must start in a fraction of a second.
SCHEMA = {
    "image/encoded": (bytes, None),
    "image/format": (bytes, None),
    "image/class/label": (int, None),
    "image/class/text": (bytes, ""),
    "image/height": (int, None),
    "image/width": (int, None),
    "image/channels": (int, None),
    "image/filename": (bytes, ""),
    "image/source_id": (bytes, ""),
}


def short_side_for(image_size: int, crop_area_range: tuple[float, float] = (0.08, 1.0),
                   eval_crop_fraction: float = 0.875) -> int:
    """The shorter side, in pixels, that images need for training and evaluating at image_size.

    Evaluation resizes a centre square of eval_crop_fraction of the shorter side, so it needs
    image_size / eval_crop_fraction (256 for 224, the usual ImageNet resize). A random training crop of area
    fraction a spans about sqrt(a) of each side, a uniform in crop_area_range: half the crops are at least the
    middle of the range (0.54 by default), spanning 0.735 of the side. Stored at image_size / sqrt(middle)
    (305 px for 224, 1.36x), the evaluation crop and at least half of the training crops still have more
    pixels than they are resized to, so they come out as from the original; smaller crops are upsampled (at
    most 2.6x at area 0.08) where the original might have had finer detail. Every crop at full detail would
    need image_size / sqrt(0.08), 3.5x (792 px for 224): more than most photos have, so nothing saved.
    """
    middle = (crop_area_range[0] + crop_area_range[1]) / 2
    return math.ceil(image_size * max(1 / eval_crop_fraction, 1 / math.sqrt(middle)))


@functools.cache
def _features() -> dict:
    import tensorflow as tf

    dtypes = {bytes: tf.string, int: tf.int64}
    return {
        key: tf.io.FixedLenFeature([], dtypes[kind], **({} if default is None else {"default_value": default}))
        for key, (kind, default) in SCHEMA.items()
    }


def __getattr__(name: str):
    if name == "FEATURES":  # the tf.io parsing spec of SCHEMA
        return _features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_ONE_BYTE = [bytes((value,)) for value in range(128)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if 0 <= value < 0x200000:  # lengths of image bytes and fields: two or three bytes, without the loop
        low = value & 0x7F | 0x80
        return bytes((low, value >> 7)) if value < 0x4000 else bytes((low, value >> 7 & 0x7F | 0x80, value >> 14))
    value &= (1 << 64) - 1  # negative int64s take ten bytes, as in protobuf
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, size: int) -> bytes:
    """A length-delimited protobuf field's tag and length (every field here has a one-byte tag)."""
    return tag + _varint(size)


def _entry(key: str, value: int | bytes) -> tuple[bytes, bytes]:
    """One Features map entry {key: 1, value: 2 Feature}, as (its bytes up to a bytes value, that value).

    Feature{bytes_list: 1 BytesList{value: 1} | int64_list: 3 Int64List{value: 1, packed}}.
    """
    if isinstance(value, int):
        packed = _varint(value)
        int64_list = b"\x0a" + _ONE_BYTE[len(packed)] + packed
        feature, payload = b"\x1a" + _ONE_BYTE[len(int64_list)] + int64_list, b""
    else:
        bytes_list = _field(b"\x0a", len(value))
        feature, payload = _field(b"\x0a", len(bytes_list) + len(value)) + bytes_list, value
    entry = _field(b"\x0a", len(key)) + key.encode() + _field(b"\x12", len(feature) + len(payload)) + feature
    return _field(b"\x0a", len(entry) + len(payload)) + entry, payload


@functools.lru_cache(maxsize=4096)
def _whole_entry(key: str, value: int | bytes) -> bytes:
    """Cached: labels, class names, formats and image sizes recur."""
    return b"".join(_entry(key, value))


_KEYS = sorted(SCHEMA)  # the order of deterministic serialization: map entries sorted by key
_ENCODED = _KEYS.index("image/encoded")


def example_pieces(
    *,
    encoded: bytes,
    image_format: str,
    label: int,
    class_name: str,
    height: int,
    width: int,
    channels: int,
    filename: str,
    source_id: str,
) -> tuple[bytes, bytes, bytes]:
    """One image as a tf.train.Example in the schema above, as (before, encoded, after) pieces.

    Written in the protobuf wire format directly, byte for byte what `Example.SerializeToString(
    deterministic=True)` gives (deterministic: identical input gives identical shards), without copying
    the image bytes, so writers checksum and write the pieces in one pass (a proto costs ~3 copies).
    Example{features: 1 Features{feature: 1 map<string, Feature>}}.
    """
    values = {
        "image/format": image_format.encode(),
        "image/class/label": label,
        "image/class/text": class_name.encode(),
        "image/height": height,
        "image/width": width,
        "image/channels": channels,
        "image/filename": filename.encode(),
        "image/source_id": source_id.encode(),
    }
    before = b"".join([_whole_entry(key, values[key]) for key in _KEYS[:_ENCODED]])
    after = b"".join([_whole_entry(key, values[key]) for key in _KEYS[_ENCODED + 1 :]])
    head = _entry("image/encoded", encoded)[0]
    size = len(before) + len(head) + len(encoded) + len(after)
    return _field(b"\x0a", size) + before + head, encoded, after


def encode_example(**fields) -> bytes:
    """Serializes one image as a tf.train.Example in the schema above (keyword arguments of example_pieces)."""
    return b"".join(example_pieces(**fields))


def parse_example(serialized):
    """Parses one serialized Example (a scalar string tf.Tensor) into the schema's tensors."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, _features())


# ------------------------------------------------------------------------------------- TFRecord framing


def _masked_crc32c(pieces) -> bytes:
    crc = 0
    for piece in pieces:
        crc = google_crc32c.extend(crc, piece)
    return struct.pack("<I", ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF)


def frame(pieces: tuple[bytes, ...] | list[bytes]) -> list[bytes]:
    """TFRecord framing of the record made of `pieces`: length, its masked crc32c, data, the data's masked
    crc32c; as pieces, so a writer hands them to writev without joining the image bytes."""
    length = struct.pack("<Q", sum(map(len, pieces)))
    return [length + _masked_crc32c([length]), *pieces, _masked_crc32c(pieces)]


def gzip_writer(raw):
    """GZIP as TensorFlow's record writer makes it (one member), reproducible: no file name, no time."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)


class RecordWriter:
    """tf.io.TFRecordWriter's write/close over tf.io.gfile (local or gs://), with the one framing above."""

    def __init__(self, path: str, compression: str = ""):
        import tensorflow as tf

        self._raw = tf.io.gfile.GFile(path, "wb")
        self._out = gzip_writer(self._raw) if compression.upper() == "GZIP" else self._raw

    def write(self, record: bytes) -> None:
        self._out.write(b"".join(frame((record,))))

    def close(self) -> None:
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DamagedRecords(ValueError):
    """A record file whose framing, checksums or count is not what was written."""


def read_records(stream, name: str):
    """Yields every record of a TFRecord stream (a binary file object), checking both checksums of each;
    DamagedRecords naming `name`, the record and its offset for anything cut short or corrupted."""
    offset, index = 0, 0
    while header := stream.read(12):
        if len(header) < 12:
            raise DamagedRecords(f"{name}: cut short inside the header of record {index} (byte {offset})")
        if _masked_crc32c([header[:8]]) != header[8:]:
            raise DamagedRecords(f"{name}: record {index} (byte {offset}): corrupted length")
        (length,) = struct.unpack("<Q", header[:8])
        data, crc = stream.read(length), stream.read(4)
        if len(data) < length or len(crc) < 4:
            raise DamagedRecords(f"{name}: cut short inside record {index} (byte {offset})")
        if _masked_crc32c([data]) != crc:
            raise DamagedRecords(f"{name}: record {index} (byte {offset}): corrupted data (checksum mismatch)")
        yield data
        offset, index = offset + 16 + length, index + 1


def count_records(path: str, compression: str = "") -> int:
    """Records in one file (local or gs://), every checksum checked; DamagedRecords naming the file."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as raw:
        try:
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compression.upper() == "GZIP" else raw
            return sum(1 for _ in read_records(stream, path))
        except (OSError, EOFError, gzip.BadGzipFile) as error:  # gzip: cut short or not gzip at all
            raise DamagedRecords(f"{path}: {error or type(error).__name__}") from None


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"
