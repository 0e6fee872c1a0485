#!/usr/bin/env python3
"""Input pipeline speed: images/second into the model, tltrain against the Keras ways, in one run.

    python tools/bench_input.py                 # 3,000 generated photo-like 500x375 JPEGs in 10 classes
    python tools/bench_input.py --images_dir D  # your own folder (D/<class>/...)
    python tools/bench_input.py --json          # one JSON object instead of the table
    python tools/bench_input.py --compare_augment   # the seed recipe: Keras layers vs tltrain.augment
    python tools/bench_input.py --profile       # where the time goes: CPU ms per image of every stage

Every method delivers image_size x image_size batches of batch_size and is measured the same way
(tools/bench_measure.py): one iterator over `.repeat()` kept for the run, a warm-up, then `--passes` timed
passes round-robin over the methods; the figure is the median pass.

  decode_limit                       tf.io.decode_jpeg of the same JPEG bytes, all cores, nothing else
  own_ceiling                        tltrain's own per-record function (parse, crop-decode, resize), no tf.data:
                                     one process per core (TensorFlow on one thread), each running it over its
                                     share of a batch in a tf.map_fn; what tltrain would give if tf.data cost
                                     nothing
  tltrain                            tltrain.data.make_train_dataset (host side only)
  tltrain_cached                     the same with --cache: decoded images (short side image_size) in memory
  tltrain_resized                    tltrain on records written with make_tfrecords --resize_for=image_size
  tltrain_augmented                  tltrain plus tltrain.augment's seed recipe, run as the train step does
  image_dataset_from_directory       keras.utils.image_dataset_from_directory(...).repeat().prefetch()
  image_dataset_from_directory_augmented   the same + the seed recipe as Keras layers in dataset.map (host)
  image_data_generator               tf_keras ImageDataGenerator(horizontal_flip).flow_from_directory
  image_data_generator_seed_recipe   the same with rotation 40, shifts/zoom/shear 0.2, horizontal flip

The ImageDataGenerator rows are context (a CPU that also runs the augmentation), without a target.
Needs tf_keras for the ImageDataGenerator baselines (not in Keras 3):
    pip install --no-deps 'tf_keras==2.21.*'   (and scipy)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
import sys

import tltrain  # noqa: F401  (first: TensorFlow's start-up settings, before TensorFlow loads)
from absl import app, flags

from shared import REPO_ROOT

import bench_measure
import photo_records
from bench_measure import Method, log

flags.DEFINE_string("images_dir", None, "Image folder (D/<class>/...); default: generate photo-like JPEGs.")
flags.DEFINE_string("work_dir", str(REPO_ROOT / ".cache" / "bench_input"),
                    "Generated images and records are kept here and reused by the next run.")
flags.DEFINE_integer("num_images", 3000, "Images to generate when --images_dir is not given.")
flags.DEFINE_integer("num_classes", 10, "Classes to generate when --images_dir is not given.")
flags.DEFINE_integer("num_shards", 8, "Training shards the converter writes.")
flags.DEFINE_integer("image_size", 224, "Output height and width of every method.")
flags.DEFINE_integer("batch_size", 64, "Batch size of every method.")
flags.DEFINE_integer("passes", 3, "Timed passes per method; the median is reported.")
flags.DEFINE_float("pass_seconds", 4.0, "About how long one timed pass of one method lasts.")
flags.DEFINE_list("methods", None, "Only these methods (default: all of them).")
flags.DEFINE_bool("compare_augment", False, "Instead: the seed recipe on device, Keras layers vs tltrain.augment.")
flags.DEFINE_bool("profile", False, "Instead: CPU milliseconds per image of each stage, one thread at a time.")
flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
flags.DEFINE_enum("cpu_allocator", "default", ["default", "bfc"],
                  "bfc: TF_CPU_ALLOCATOR_USE_BFC=true, TF's pooling allocator, so a 38 MB float32 batch does not "
                  "take fresh pages from the kernel every step (set before TensorFlow starts).")
FLAGS = flags.FLAGS

SEED_RECIPE = dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
                   zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")
METHODS = ("decode_limit", "own_ceiling", "tltrain", "tltrain_cached", "tltrain_resized", "tltrain_augmented",
           "image_dataset_from_directory", "image_dataset_from_directory_augmented", "image_data_generator",
           "image_data_generator_seed_recipe")
TARGETS = (  # (method, baseline, minimum ratio)
    ("tltrain", "own_ceiling", 0.9),  # what tf.data loses
    ("tltrain_resized", "decode_limit", 2.0),  # records sized for training against decoding the originals
    ("tltrain", "image_dataset_from_directory", 1.1),
    ("tltrain_augmented", "image_dataset_from_directory_augmented", 1.5),
)
RATIO_COLUMNS = ("decode_limit", "own_ceiling")
TF_KERAS_MISSING = ("tools/bench_input.py: tf_keras is not installed; the ImageDataGenerator baselines need it: "
                    "pip install --no-deps 'tf_keras==2.21.*' scipy")


# -------------------------------------------------------------------------------------------- the data


def prepare_images() -> str:
    return FLAGS.images_dir or photo_records.photo_images(FLAGS.work_dir, FLAGS.num_images, FLAGS.num_classes, log)


def prepare_records(images_dir: str, resize_for: int = 0) -> str:
    return photo_records.photo_records(images_dir, FLAGS.work_dir, FLAGS.num_shards, resize_for, log)


def train_records(records_dir: str) -> list[bytes]:
    """Every serialized record of the train split."""
    import tensorflow as tf

    files, compression = photo_records.train_split_files(records_dir)
    return list(tf.data.TFRecordDataset(files, compression).as_numpy_iterator())


def train_jpeg_bytes(records_dir: str) -> list[bytes]:
    from tltrain import records

    return [records.parse_example(r)["image/encoded"].numpy() for r in train_records(records_dir)]


# ----------------------------------------------------------------------------------------- the methods


def decode_limit(encoded: list[bytes]):
    import tensorflow as tf

    def start():
        decoded = tf.data.Dataset.from_tensor_slices(encoded).repeat().map(
            lambda e: tf.shape(tf.io.decode_jpeg(e, channels=3))[0],
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        return bench_measure.iterate(decoded.batch(FLAGS.batch_size).map(lambda b: (b,)).prefetch(tf.data.AUTOTUNE))

    return Method("decode_limit", start)


def _ceiling_worker(connection, records_dir: str, image_size: int, share: int, offset: int) -> None:
    """One process of own_ceiling: TensorFlow on one thread, records in memory; on each request it decodes the
    next `share` of them with tltrain's per-record function and answers with the image count."""
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    from tltrain import data
    from tltrain.config import DataConfig

    serialized = train_records(records_dir)
    shares = [tf.constant(serialized[i:i + share]) for i in range(0, len(serialized) - share + 1, share)]
    decode = data.train_record_decoder(DataConfig(records_dir=records_dir), image_size)
    image_spec = tf.TensorSpec([image_size, image_size, 3], tf.uint8)

    @tf.function
    def decode_share(records):
        return tf.map_fn(lambda r: decode(r)[0], records, fn_output_signature=image_spec, parallel_iterations=1)

    position = offset
    connection.send(int(decode_share(shares[position]).shape[0]))  # traced: ready
    while connection.recv():
        position = (position + 1) % len(shares)
        connection.send(int(decode_share(shares[position]).shape[0]))


def own_ceiling(records_dir: str) -> Method:
    """tltrain's per-record function without tf.data: one process per core, each with TensorFlow on one thread
    mapping the function over its share of every batch in a tf.map_fn (one graph call per share), from records
    already in memory. Processes, not threads: no Python lock or shared runtime between the cores."""
    import multiprocessing

    cores = len(os.sched_getaffinity(0))
    share = max(1, FLAGS.batch_size // cores)

    def start():
        context = multiprocessing.get_context("spawn")
        connections = []
        for index in range(cores):
            here, there = context.Pipe()
            context.Process(target=_ceiling_worker, daemon=True,
                            args=(there, records_dir, FLAGS.image_size, share, 7 * index)).start()
            connections.append(here)
        for connection in connections:
            connection.recv()

        def next_batch():
            for connection in connections:
                connection.send(True)
            return sum(connection.recv() for connection in connections)

        return next_batch

    return Method("own_ceiling", start, tf_data=False)


def tltrain_methods(records_dir: str, resized_dir: str, num_classes: int) -> list[Method]:
    import tensorflow as tf

    from tltrain import augment, data
    from tltrain.config import AugmentConfig, DataConfig

    cfg = DataConfig(records_dir=records_dir, batch_size=FLAGS.batch_size)

    def plain(config: DataConfig = cfg):
        return lambda: bench_measure.iterate(data.make_train_dataset(config, FLAGS.image_size))

    def cached():
        next_batch = bench_measure.iterate(data.make_train_dataset(dataclasses.replace(cfg, cache=True), FLAGS.image_size))
        count = data.dataset_info(cfg).split_counts[cfg.train_split]
        log(f"filling the --cache: {count} images ...")
        for _ in range(math.ceil((count + cfg.shuffle_buffer) / FLAGS.batch_size) + 1):
            next_batch()  # one epoch read, plus what the shuffle buffer holds: only the cache feeds it now
        return next_batch

    def augmented():
        augmenter = augment.Augmenter(AugmentConfig(preset="seed_recipe"), num_classes)

        @tf.function
        def step(images, labels, seed):  # what the trainer's replicated step does before the model
            return augmenter(images, tf.one_hot(labels, num_classes), seed)

        iterator = iter(data.make_train_dataset(cfg, FLAGS.image_size))
        count = [0]

        def next_batch():
            images, labels = next(iterator)
            count[0] += 1
            augmented_images, _ = step(images, labels, tf.constant([0, count[0]], tf.int64))
            return int(augmented_images.shape[0])

        return next_batch

    return [Method("tltrain", plain()), Method("tltrain_cached", cached),
            Method("tltrain_resized", plain(dataclasses.replace(cfg, records_dir=resized_dir))),
            Method("tltrain_augmented", augmented)]


def keras_layers_seed_recipe():
    """The seed recipe as Keras preprocessing layers, the way the Keras guides build it."""
    import keras

    layers = keras.layers
    return keras.Sequential([
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(40 / 360, fill_mode="nearest"),
        layers.RandomTranslation(0.2, 0.2, fill_mode="nearest"),
        layers.RandomZoom(0.2, 0.2, fill_mode="nearest"),
        layers.RandomShear(x_factor=0.2, fill_mode="nearest"),
    ])


def keras_methods(images_dir: str) -> list[Method]:
    import keras
    import tensorflow as tf

    size = (FLAGS.image_size, FLAGS.image_size)

    def from_directory():
        return keras.utils.image_dataset_from_directory(images_dir, image_size=size, batch_size=FLAGS.batch_size,
                                                        shuffle=True, seed=0, verbose=False).repeat()

    def plain():
        return bench_measure.iterate(from_directory().prefetch(tf.data.AUTOTUNE))

    def augmented():
        augmentation = keras_layers_seed_recipe()
        mapped = from_directory().map(lambda x, y: (augmentation(x, training=True), y),
                                      num_parallel_calls=tf.data.AUTOTUNE)
        return bench_measure.iterate(mapped.prefetch(tf.data.AUTOTUNE))

    return [Method("image_dataset_from_directory", plain),
            Method("image_dataset_from_directory_augmented", augmented)]


def image_data_generator_methods(images_dir: str) -> list[Method]:
    from tf_keras.preprocessing.image import ImageDataGenerator

    def flow(**augmentation):
        def start():
            with contextlib.redirect_stdout(sys.stderr):  # "Found N images": keep stdout for --json
                iterator = ImageDataGenerator(**augmentation).flow_from_directory(
                    images_dir, target_size=(FLAGS.image_size, FLAGS.image_size), batch_size=FLAGS.batch_size,
                    class_mode="sparse", shuffle=True, seed=0)
            return lambda: len(next(iterator)[0])

        return start

    return [Method("image_data_generator", flow(horizontal_flip=True), tf_data=False),
            Method("image_data_generator_seed_recipe", flow(**SEED_RECIPE), tf_data=False)]


# ---------------------------------------------------------------------------------------- the measuring


def measure(methods: list[Method]) -> dict[str, list[float]]:
    return bench_measure.measure(methods, FLAGS.batch_size, FLAGS.passes, FLAGS.pass_seconds)


def report(figures: dict[str, float], passes: dict[str, list[float]], about: dict, settings: dict,
           targets: tuple = TARGETS) -> dict:
    return bench_measure.report(figures, passes, about, settings, targets, RATIO_COLUMNS, FLAGS.json,
                                hint="where the time goes: python tools/bench_input.py --profile (and tltrain "
                                     "against own_ceiling: what tf.data costs)")


def compare_augment(num_classes: int = 10) -> None:
    """The seed recipe on a device-resident uint8 batch: five Keras layers (one resampling pass each) against
    tltrain.augment's single composed affine resample. Both traced in a tf.function, as in a train step."""
    import tensorflow as tf

    from tltrain import augment
    from tltrain.config import AugmentConfig

    shape = [FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3]
    images = tf.cast(tf.random.stateless_uniform(shape, [0, 0], maxval=256, dtype=tf.int32), tf.uint8)
    labels = tf.one_hot(tf.range(FLAGS.batch_size) % num_classes, num_classes)
    layers = keras_layers_seed_recipe()
    augmenter = augment.Augmenter(AugmentConfig(preset="seed_recipe"), num_classes)
    keras_step = tf.function(lambda x: layers(tf.cast(x, tf.float32), training=True))
    tltrain_step = tf.function(lambda x, seed: augmenter(x, labels, seed)[0])

    def start(fn):
        count = [0]

        def next_batch():
            count[0] += 1
            return int(fn(count[0]).shape[0])

        return lambda: next_batch

    methods = [Method("keras_layers_seed_recipe", start(lambda i: keras_step(images)), tf_data=False),
               Method("tltrain_augment_seed_recipe",
                      start(lambda i: tltrain_step(images, tf.constant([0, i], tf.int64))), tf_data=False)]
    passes = measure(methods)
    figures = {name: statistics.median(values) for name, values in passes.items()}
    report(figures, passes, bench_measure.machine(), {"batch_size": FLAGS.batch_size, "image_size": FLAGS.image_size},
           targets=(("tltrain_augment_seed_recipe", "keras_layers_seed_recipe", 1.0),))


def profile(images_dir: str, records_dir: str, resized_dir: str, num_classes: int) -> None:
    """CPU cost of every stage on one thread: robust to other load, unlike images/second. The host stages
    run in tf.data with one thread; the augmentation as the train step runs it. Two cores then bound the
    throughput at 2000 / (host + augment) images/second, before any overlap loss."""
    import tensorflow as tf

    from tltrain import augment, data, records
    from tltrain.config import AugmentConfig, DataConfig

    count = 512
    encoded = train_jpeg_bytes(records_dir)[:count]
    serialized = train_records(records_dir)[:count]
    resized = train_records(resized_dir)[:count]
    cfg = DataConfig(records_dir=records_dir)
    host = bench_measure.one_thread_pass
    size = FLAGS.image_size

    def crop(e):
        return tf.image.decode_and_crop_jpeg(e, data.random_crop_window(tf.io.extract_jpeg_shape(e), cfg), channels=3)

    stages = {  # [0, 0]: one pixel out, so no stage is pruned or pays for copying its output
        "decode the whole JPEG (decode_limit's work)": host(encoded, lambda e: tf.io.decode_jpeg(e, 3)[0, 0]),
        "parse the record": host(serialized, lambda s: tf.strings.length(records.parse_example(s)["image/encoded"])),
        "pick a random crop window": host(encoded, lambda e: data.random_crop_window(tf.io.extract_jpeg_shape(e), cfg)),
        "decode only the crop": host(encoded, lambda e: crop(e)[0, 0]),
        "decode the crop, resize to uint8": host(encoded, lambda e: data.decode_for_train(e, size, cfg)),
        "tltrain host total: parse, crop, resize": host(serialized, data.train_record_decoder(cfg, size)),
        f"--resize_for={size} records: decode only the crop": host(
            [records.parse_example(r)["image/encoded"].numpy() for r in resized], lambda e: crop(e)[0, 0]),
        f"--resize_for={size} records: host total": host(
            resized, data.train_record_decoder(dataclasses.replace(cfg, records_dir=resized_dir), size)),
    }
    augmenter = augment.Augmenter(AugmentConfig(preset="seed_recipe"), num_classes)
    batch = tf.cast(tf.random.stateless_uniform([FLAGS.batch_size, size, size, 3], [0, 0], maxval=256,
                                                dtype=tf.int32), tf.uint8)
    labels = tf.one_hot(tf.range(FLAGS.batch_size) % num_classes, num_classes)
    step = tf.function(lambda seed: augmenter(batch, labels, seed)[0])
    costs = {name: bench_measure.cpu_ms_per_image(run_once, count) for name, run_once in stages.items()}
    steps = max(1, count // FLAGS.batch_size)
    costs["seed recipe augmentation on the device"] = bench_measure.cpu_ms_per_image(
        lambda: [step(tf.constant([0, i], tf.int64)).shape for i in range(steps)], steps * FLAGS.batch_size)
    generator = image_data_generator_methods(images_dir)[1]  # seed recipe; single-threaded, so img/s = 1000/ms
    generator.next_batch = generator.start()
    costs["ImageDataGenerator seed recipe (all of it)"] = bench_measure.cpu_ms_per_image(
        lambda: [generator.next_batch() for _ in range(2)], 2 * FLAGS.batch_size)
    print(f"CPU milliseconds per image, each stage alone on one thread ({len(encoded)} images, median of 3)")
    for name, cost in costs.items():
        print(f"{cost:6.2f} ms  {name}")
    host_ms = costs["tltrain host total: parse, crop, resize"]
    resized_ms = costs[f"--resize_for={size} records: host total"]
    device_ms = costs["seed recipe augmentation on the device"]
    resize_ms = costs["decode the crop, resize to uint8"] - costs["decode only the crop"]
    cores = len(os.sched_getaffinity(0))
    print(f"resizing a crop to {size} px costs {resize_ms:.2f} ms whatever the stored size: {resize_ms / resized_ms:.0%} "
          f"of the resized records' host total")
    print(f"ceilings on {cores} cores (no overlap loss): decode_limit {cores * 1000 / costs[next(iter(costs))]:.0f} "
          f"img/s, tltrain {cores * 1000 / host_ms:.0f}, tltrain_resized {cores * 1000 / resized_ms:.0f}, "
          f"tltrain_augmented {cores * 1000 / (host_ms + device_ms):.0f}, "
          f"image_data_generator_seed_recipe {1000 / costs['ImageDataGenerator seed recipe (all of it)']:.0f}")
    large_photos(size)


def large_photos(size: int, count: int = 64, width: int = 2000, height: int = 1500) -> None:
    """What --resize_for saves on photos much larger than the training size: tltrain's decode (crop, DCT-domain
    downscale, resize) of generated width x height JPEGs, as they are and as the converter stores them."""
    import tempfile

    from shared import photo_like
    from tltrain import data
    from tltrain.config import DataConfig
    from tltrain.convert.images import load
    from tltrain.convert.options import Options

    originals, resized = [], []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(count):
            path = os.path.join(folder, f"{index}.jpg")
            with open(path, "wb") as f:
                f.write(photo_like(index, width, height))
            originals.append(open(path, "rb").read())
            resized.append(load(path, Options(resize_for=size)).encoded)
    costs = [bench_measure.cpu_ms_per_image(bench_measure.one_thread_pass(
        encoded, lambda e: data.decode_for_train(e, size, DataConfig())), count) for encoded in (originals, resized)]
    print(f"{width}x{height} photos: crop, decode, resize {costs[0]:.2f} ms as they are, {costs[1]:.2f} ms from "
          f"--resize_for={size} records: {costs[0] / costs[1]:.1f}x less CPU per image")


def main(argv):
    del argv
    if FLAGS.cpu_allocator == "bfc":
        if "tensorflow" in sys.modules:
            raise app.UsageError("--cpu_allocator=bfc: TensorFlow was imported before the flag could apply")
        os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    if FLAGS.compare_augment:
        return compare_augment()
    unknown = set(FLAGS.methods or ()) - set(METHODS)
    if unknown:
        raise app.UsageError(f"--methods: unknown {', '.join(sorted(unknown))}; expected some of {', '.join(METHODS)}")
    try:
        import tf_keras  # noqa: F401
        import scipy  # noqa: F401  (ImageDataGenerator's transforms)
    except ImportError:
        print(TF_KERAS_MISSING, file=sys.stderr)
        return 1
    about = bench_measure.machine()
    images_dir = prepare_images()
    records_dir = prepare_records(images_dir)
    from tltrain import data
    from tltrain.config import DataConfig

    num_classes = data.dataset_info(DataConfig(records_dir=records_dir)).num_classes
    chosen = FLAGS.methods or METHODS
    resized_dir = prepare_records(images_dir, FLAGS.image_size) if FLAGS.profile or "tltrain_resized" in chosen \
        else records_dir
    if FLAGS.profile:
        return profile(images_dir, records_dir, resized_dir, num_classes)
    methods = [decode_limit(train_jpeg_bytes(records_dir)), own_ceiling(records_dir),
               *tltrain_methods(records_dir, resized_dir, num_classes), *keras_methods(images_dir),
               *image_data_generator_methods(images_dir)]
    methods = [m for m in methods if m.name in chosen]
    passes = measure(methods)
    figures = {name: statistics.median(values) for name, values in passes.items()}
    settings = {"images": images_dir, "resized_records": resized_dir, "image_size": FLAGS.image_size,
                "batch_size": FLAGS.batch_size,
                "passes": FLAGS.passes, "iteration": "one iterator over .repeat() per method, kept for the run"}
    report(figures, passes, about, settings)
    return 0


if __name__ == "__main__":
    app.run(main)
