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
    """Serializes one image as a tf.train.Example in the schema above.

    Filled in place (nested constructors copy the image bytes several times, ~3x slower) and serialized
    deterministically: the feature map's order is otherwise random per process, and identical input must
    give byte-identical shards.
    """
    example = tf.train.Example()
    feature = example.features.feature
    for key, value in (
        ("image/encoded", encoded),
        ("image/format", image_format.encode()),
        ("image/class/text", class_name.encode()),
        ("image/filename", filename.encode()),
        ("image/source_id", source_id.encode()),
    ):
        feature[key].bytes_list.value.append(value)
    for key, value in (
        ("image/class/label", label),
        ("image/height", height),
        ("image/width", width),
        ("image/channels", channels),
    ):
        feature[key].int64_list.value.append(value)
    return example.SerializeToString(deterministic=True)


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

