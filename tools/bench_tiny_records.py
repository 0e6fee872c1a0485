#!/usr/bin/env python3
"""Tiny images (Fashion-MNIST's 28x28 gray): raw-pixel records against PNG and JPEG records, in one run.

    python tools/bench_tiny_records.py                   # 20,000 Fashion-MNIST training images, trained at 28 px
    python tools/bench_tiny_records.py --image_size=96   # the size a pretrained backbone is fine-tuned at
    python tools/bench_tiny_records.py --json

A 28x28 gray image is 784 bytes of pixels; as a PNG it is about 300-400 bytes that take a decoder call to
expand. The records are written in the project's schema (image/format raw, png or jpeg), from the Debian
package dataset-fashion-mnist's idx file when it is installed, else from generated 28x28 pictures:

  decode_{raw,png,jpeg}    the bytes to uint8 pixels in tf.data on all cores, nothing else
  tltrain_{raw,png,jpeg}   tltrain.data.make_train_dataset on those records at --image_size
"""

from __future__ import annotations

import io
import os
import statistics

import tltrain  # noqa: F401  (first: TensorFlow's start-up settings, before TensorFlow loads)
from absl import app, flags

import bench_measure
from bench_measure import Method, log
from shared import FASHION_MNIST_DIR, REPO_ROOT, fashion_mnist_files, read_fashion_mnist

FASHION_MNIST = fashion_mnist_files(FASHION_MNIST_DIR, "train")[0]
FORMATS = ("raw", "png", "jpeg")

flags.DEFINE_integer("num_images", 20000, "Images written in each format.")
flags.DEFINE_integer("image_size", 28, "Output size of the tltrain pipelines.")
flags.DEFINE_integer("batch_size", 128, "Batch size of every method.")
flags.DEFINE_integer("passes", 3, "Timed passes per method; the median is reported.")
flags.DEFINE_float("pass_seconds", 3.0, "About how long one timed pass of one method lasts.")
flags.DEFINE_string("work_dir", str(REPO_ROOT / ".cache" / "bench_tiny_records"), "Where the records are written.")
flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
FLAGS = flags.FLAGS


def tiny_images(count: int):
    """uint8 [count, 28, 28]: Fashion-MNIST's training images when installed, else smooth random pictures."""
    import numpy as np

    if os.path.exists(FASHION_MNIST):
        return read_fashion_mnist(FASHION_MNIST_DIR, "train")[0][:count]
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (count, 7, 7)).astype(np.float32)
    return np.clip(np.kron(coarse, np.ones((4, 4))) + rng.normal(0, 12, (count, 28, 28)), 0, 255).astype(np.uint8)


def encode(pixels, image_format: str) -> bytes:
    from PIL import Image

    if image_format == "raw":
        return pixels.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format.upper(), **({"quality": 95} if image_format == "jpeg" else {}))
    return buffer.getvalue()


def write_records(images, image_format: str) -> tuple[str, list[bytes]]:
    """records_dir of one train split (4 shards) in image_format, and the serialized records."""
    from tltrain import records
    from tltrain.dataset_metadata import DatasetMetadata, Shard

    out = os.path.join(FLAGS.work_dir, f"{image_format}_{len(images)}")
    os.makedirs(out, exist_ok=True)
    encoded = [encode(pixels, image_format) for pixels in images]
    serialized = [records.encode_example(encoded=e, image_format=image_format, label=i % 10, class_name=f"c{i % 10}",
                                         height=28, width=28, channels=1, filename=f"{i}", source_id=str(i))
                  for i, e in enumerate(encoded)]
    shards = []
    for shard in range(4):
        name = records.shard_name("train", shard, 4)
        with records.RecordWriter(os.path.join(out, name)) as writer:
            for example in serialized[shard::4]:
                writer.write(example)
        shards.append(Shard(name, len(serialized[shard::4])))
    per_class = [len(range(c, len(images), 10)) for c in range(10)]
    DatasetMetadata.build([f"c{c}" for c in range(10)], {"train": (per_class, shards)}, image_format).write(out)
    return out, serialized


def decode_method(image_format: str, images) -> Method:
    import tensorflow as tf

    def decode(e):
        if image_format == "raw":
            return tf.reshape(tf.io.decode_raw(e, tf.uint8), [28, 28, 1])
        return tf.io.decode_image(e, channels=1, expand_animations=False)

    encoded = [encode(pixels, image_format) for pixels in images]

    def start():
        pixels = tf.data.Dataset.from_tensor_slices(encoded).repeat().map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        return bench_measure.iterate(pixels.batch(FLAGS.batch_size).map(lambda b: (b,)).prefetch(tf.data.AUTOTUNE))

    return Method(f"decode_{image_format}", start)


def main(argv):
    del argv
    from tltrain import data
    from tltrain.config import DataConfig

    about = bench_measure.machine()
    images = tiny_images(FLAGS.num_images)
    log(f"writing {len(images)} images as raw, PNG and JPEG records in {FLAGS.work_dir} ...")
    written = {image_format: write_records(images, image_format) for image_format in FORMATS}
    methods = [decode_method(image_format, images) for image_format in FORMATS]
    for image_format, (records_dir, _) in written.items():
        cfg = DataConfig(records_dir=records_dir, batch_size=FLAGS.batch_size)
        methods.append(Method(f"tltrain_{image_format}", lambda cfg=cfg: bench_measure.iterate(
            data.make_train_dataset(cfg, FLAGS.image_size))))
    passes = bench_measure.measure(methods, FLAGS.batch_size, FLAGS.passes, FLAGS.pass_seconds)
    figures = {name: statistics.median(values) for name, values in passes.items()}
    source = FASHION_MNIST if os.path.exists(FASHION_MNIST) else "generated 28x28 gray pictures"
    settings = {"images": len(images), "source": source, "image_size": FLAGS.image_size,
                "batch_size": FLAGS.batch_size, "passes": FLAGS.passes}
    sizes = {image_format: round(statistics.mean(map(len, serialized)), 1)
             for image_format, (_, serialized) in written.items()}
    cpu_ms = {}  # tltrain's per-record function on one thread: the ratio that other load does not move
    for image_format, (records_dir, serialized) in written.items():
        cfg = DataConfig(records_dir=records_dir)
        run_once = bench_measure.one_thread_pass(serialized[:4096], data.train_record_decoder(cfg, FLAGS.image_size))
        cpu_ms[image_format] = round(bench_measure.cpu_ms_per_image(run_once, 4096), 4)
    cpu_ratios = {f"png_over_{f}": round(cpu_ms["png"] / cpu_ms[f], 3) for f in FORMATS}
    bench_measure.report(figures, passes, about, settings,
                         targets=(("tltrain_raw", "tltrain_png", 1.0), ("decode_raw", "decode_png", 1.0)),
                         columns=("decode_png", "tltrain_png"), as_json=FLAGS.json,
                         extra={"record_bytes": sizes, "tltrain_cpu_ms_per_image_one_thread": cpu_ms,
                                "cpu_ratio": cpu_ratios})
    return 0


if __name__ == "__main__":
    app.run(main)
