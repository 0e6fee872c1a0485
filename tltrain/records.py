"""The one TFRecord schema and dataset.json layout, shared by the writer (tltrain.convert) and the readers.

Compatible with the TensorFlow Model Garden classification decoder and the Cloud TPU ImageNet records.
"""

from __future__ import annotations

import json
import posixpath

import tensorflow as tf

METADATA_FILE = "dataset.json"
SPLITS = ("train", "validation", "test")

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/channels": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def encode_example(
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
) -> bytes:
    """Serializes one image as a tf.train.Example in the schema above."""
    feature = {
        "image/encoded": _bytes(encoded),
        "image/format": _bytes(image_format.encode()),
        "image/class/label": _int64(label),
        "image/class/text": _bytes(class_name.encode()),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/channels": _int64(channels),
        "image/filename": _bytes(filename.encode()),
        "image/source_id": _bytes(source_id.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized Example (a scalar string tensor) into the schema's tensors."""
    return tf.io.parse_single_example(serialized, FEATURES)


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def read_metadata(records_dir: str) -> dict:
    """Reads dataset.json; the error names the file when it is missing (also for gs:// paths)."""
    path = posixpath.join(records_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no {METADATA_FILE}; build records with tools/make_tfrecords.py")
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)

