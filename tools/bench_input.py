#!/usr/bin/env python3
"""Input pipeline speed: images/second into the model, tltrain against the Keras ways, in one run.

    python tools/bench_input.py                 # 3,000 generated photo-like 500x375 JPEGs in 10 classes
    python tools/bench_input.py --images_dir D  # your own folder (D/<class>/...)
    python tools/bench_input.py --json          # one JSON object instead of the table
    python tools/bench_input.py --compare_augment   # the seed recipe: Keras layers vs tltrain.augment
    python tools/bench_input.py --profile       # where the time goes: CPU ms per image of every stage

Every method delivers image_size x image_size batches of batch_size and is measured the same way: one
iterator over `.repeat()` kept for the whole run (DESIGN.md: on this 2-core machine AUTOTUNE with a fresh
iterator per epoch ran 30-60% of epochs at half speed, one long-lived iterator never did; the trainer keeps one),
a warm-up, then `--passes` timed passes taken round-robin over the methods, so a burst of load from other
processes hits every method rather than one; the figure is the median pass. tf.data methods drain their
prefetch buffers for a second before each pass so a pass never starts on batches made while idle.

  decode_limit                       tf.io.decode_jpeg of the same JPEG bytes, all cores, nothing else
  tltrain                            tltrain.data.make_train_dataset (host side only)
  tltrain_augmented                  the same plus tltrain.augment's seed recipe, run as the train step does
  image_dataset_from_directory       keras.utils.image_dataset_from_directory(...).repeat().prefetch()
  image_dataset_from_directory_augmented   the same + the seed recipe as Keras layers in dataset.map (host)
  image_data_generator               tf_keras ImageDataGenerator(horizontal_flip).flow_from_directory
  image_data_generator_seed_recipe   the same with rotation 40, shifts/zoom/shear 0.2, horizontal flip

Needs tf_keras for the ImageDataGenerator baselines (not in Keras 3):
    pip install --no-deps 'tf_keras==2.21.*'   (and scipy)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))
import tltrain  # noqa: E402,F401  (first: TensorFlow's start-up settings, before TensorFlow loads)

from absl import app, flags  # noqa: E402

flags.DEFINE_string("images_dir", None, "Image folder (D/<class>/...); default: generate photo-like JPEGs.")
flags.DEFINE_string("work_dir", os.path.join(REPO, ".cache", "bench_input"),
                    "Generated images and records are kept here and reused by the next run.")
flags.DEFINE_integer("num_images", 3000, "Images to generate when --images_dir is not given.")
flags.DEFINE_integer("num_classes", 10, "Classes to generate when --images_dir is not given.")
flags.DEFINE_integer("num_shards", 8, "Training shards the converter writes.")
flags.DEFINE_integer("image_size", 224, "Output height and width of every method.")
flags.DEFINE_integer("batch_size", 64, "Batch size of every method.")
flags.DEFINE_integer("passes", 3, "Timed passes per method; the median is reported.")
flags.DEFINE_float("pass_seconds", 4.0, "About how long one timed pass of one method lasts.")
flags.DEFINE_list("methods", None, "Only these methods (default: all seven).")
flags.DEFINE_bool("compare_augment", False, "Instead: the seed recipe on device, Keras layers vs tltrain.augment.")
flags.DEFINE_bool("profile", False, "Instead: CPU milliseconds per image of each stage, one thread at a time.")
flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
flags.DEFINE_enum("cpu_allocator", "default", ["default", "bfc"],
                  "bfc: TF_CPU_ALLOCATOR_USE_BFC=true, TF's pooling allocator, so a 38 MB float32 batch does not "
                  "take fresh pages from the kernel every step (set before TensorFlow starts).")
FLAGS = flags.FLAGS

SEED_RECIPE = dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
                   zoom_range=0.2, horizontal_flip=True, fill_mode="nearest")
METHODS = ("decode_limit", "tltrain", "tltrain_augmented", "image_dataset_from_directory",
           "image_dataset_from_directory_augmented", "image_data_generator", "image_data_generator_seed_recipe")
TARGETS = (  # (method, baseline, minimum ratio) from the issue that asked for this bench
    ("tltrain", "decode_limit", 0.9),
    ("tltrain_augmented", "image_data_generator_seed_recipe", 10.0),
    ("tltrain_augmented", "image_dataset_from_directory_augmented", 1.5),
    ("tltrain", "image_dataset_from_directory", 1.0),
)
TF_KERAS_MISSING = ("tools/bench_input.py: tf_keras is not installed; the ImageDataGenerator baselines need it: "
                    "pip install --no-deps 'tf_keras==2.21.*' scipy")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------- the data


def photo_like(index: int, width: int = 500, height: int = 375) -> bytes:
    """A JPEG that costs what a photo costs to decode: smooth colour fields, a few hard-edged shapes,
    mid-frequency texture and sensor-like noise (about 55 KB at quality 90)."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(index)
    base = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    texture = Image.fromarray(rng.integers(0, 256, (height // 12, width // 12, 3), dtype=np.uint8))
    picture = Image.blend(base, texture.resize((width, height), Image.BILINEAR), 0.35)
    draw = ImageDraw.Draw(picture)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x, y, x + int(rng.integers(20, 200)), y + int(rng.integers(20, 200))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noisy = np.asarray(picture, np.int16) + rng.normal(0, 7, (height, width, 3)).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _write_photo(job: tuple[int, str]) -> None:
    index, path = job
    with open(path, "wb") as f:
        f.write(photo_like(index))


def prepare_images() -> str:
    if FLAGS.images_dir:
        return FLAGS.images_dir
    import multiprocessing

    images_dir = os.path.join(FLAGS.work_dir, f"images_{FLAGS.num_images}_{FLAGS.num_classes}")
    done = os.path.join(images_dir, ".complete")
    if not os.path.exists(done):
        log(f"generating {FLAGS.num_images} photo-like 500x375 JPEGs in {images_dir} ...")
        jobs = []
        for index in range(FLAGS.num_images):
            folder = os.path.join(images_dir, f"class_{index % FLAGS.num_classes:02d}")
            os.makedirs(folder, exist_ok=True)
            jobs.append((index, os.path.join(folder, f"{index:06d}.jpg")))
        with multiprocessing.get_context("spawn").Pool() as pool:
            pool.map(_write_photo, jobs, chunksize=32)
        open(done, "w").close()
    return images_dir


def prepare_records(images_dir: str) -> str:
    """Records of every image (one train split), by the project's converter; reused while they match."""
    from tltrain import convert
    from tltrain.dataset_metadata import DatasetMetadata

    records_dir = os.path.join(FLAGS.work_dir, "records_" + os.path.basename(os.path.normpath(images_dir)))
    try:
        metadata = DatasetMetadata.read(records_dir)
        fresh = (metadata.provenance.get("source") == images_dir and "validation" not in metadata.splits
                 and len(metadata.shard_paths("train")) == FLAGS.num_shards)
    except (FileNotFoundError, ValueError):
        fresh = False
    if not fresh:
        log(f"converting {images_dir} -> {records_dir} ...")
        convert.convert(images_dir, records_dir, overwrite=True, progress=False, validation_fraction=0.0,
                        num_shards=FLAGS.num_shards)
    return records_dir


def train_jpeg_bytes(records_dir: str) -> list[bytes]:
    import tensorflow as tf

    from tltrain import data, records
    from tltrain.config import DataConfig
    from tltrain.dataset_metadata import DatasetMetadata

    info = data.dataset_info(DataConfig(records_dir=records_dir))
    metadata = DatasetMetadata.read(records_dir)
    encoded = [records.parse_example(r)["image/encoded"].numpy()
               for r in tf.data.TFRecordDataset(metadata.shard_paths("train"), metadata.compression)]
    assert len(encoded) == info.split_counts["train"]
    return encoded


# ----------------------------------------------------------------------------------------- the methods


class Method:
    """A name and a factory of `next_batch() -> number of images`; `tf_data` methods get drained first."""

    def __init__(self, name: str, start, tf_data: bool = True):
        self.name, self.start, self.tf_data = name, start, tf_data
        self.next_batch = None


def _iterate(dataset):
    iterator = iter(dataset)
    return lambda: int(next(iterator)[0].shape[0])


def decode_limit(encoded: list[bytes]):
    import tensorflow as tf

    def start():
        decoded = tf.data.Dataset.from_tensor_slices(encoded).repeat().map(
            lambda e: tf.shape(tf.io.decode_jpeg(e, channels=3))[0],
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        return _iterate(decoded.batch(FLAGS.batch_size).map(lambda b: (b,)).prefetch(tf.data.AUTOTUNE))

    return Method("decode_limit", start)


def tltrain_methods(records_dir: str, num_classes: int) -> list[Method]:
    import tensorflow as tf

    from tltrain import augment, data
    from tltrain.config import AugmentConfig, DataConfig

    cfg = DataConfig(records_dir=records_dir, batch_size=FLAGS.batch_size)

    def plain():
        return _iterate(data.make_train_dataset(cfg, FLAGS.image_size))

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

    return [Method("tltrain", plain), Method("tltrain_augmented", augmented)]


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
        return _iterate(from_directory().prefetch(tf.data.AUTOTUNE))

    def augmented():
        augmentation = keras_layers_seed_recipe()
        mapped = from_directory().map(lambda x, y: (augmentation(x, training=True), y),
                                      num_parallel_calls=tf.data.AUTOTUNE)
        return _iterate(mapped.prefetch(tf.data.AUTOTUNE))

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


def _images_in(method: Method, seconds: float, min_batches: int = 1) -> tuple[int, float]:
    images, start = 0, time.perf_counter()
    batches = 0
    while batches < min_batches or time.perf_counter() - start < seconds:
        images += method.next_batch()
        batches += 1
    return images, time.perf_counter() - start


def measure(methods: list[Method]) -> dict[str, list[float]]:
    """images/second of every pass of every method, round-robin (see the module docstring)."""
    batches_per_pass = {}
    for method in methods:
        log(f"warming up {method.name} ...")
        method.next_batch = method.start()
        _images_in(method, 2.0, min_batches=3)  # start-up, tracing, autotuning, shuffle buffer
        images, seconds = _images_in(method, 1.0, min_batches=2)
        batches_per_pass[method.name] = max(3, math.ceil(FLAGS.pass_seconds * images / seconds / FLAGS.batch_size))
    passes = {method.name: [] for method in methods}
    for index in range(FLAGS.passes):
        for method in methods:
            if method.tf_data:
                _images_in(method, 1.0, min_batches=2)
            images, start = 0, time.perf_counter()
            for _ in range(batches_per_pass[method.name]):
                images += method.next_batch()
            passes[method.name].append(images / (time.perf_counter() - start))
            log(f"pass {index + 1}/{FLAGS.passes} {method.name}: {passes[method.name][-1]:.1f} img/s")
    return passes


def machine() -> dict:
    import keras
    import tensorflow as tf

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        import tf_keras

        versions["tf_keras"] = tf_keras.__version__
    except ImportError:
        pass
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "tf_cpu_allocator_use_bfc": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", ""),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2), **versions}


def report(figures: dict[str, float], passes: dict[str, list[float]], about: dict, settings: dict,
           targets: tuple = TARGETS) -> dict:
    """Prints the table (or the JSON object) and returns the JSON object."""
    ratios = {name: {f"x_{base}": round(value / figures[base], 3) for base in ("image_data_generator_seed_recipe",
                                                                                "decode_limit") if base in figures}
              for name, value in figures.items()}
    checks = [{"target": f"{name} >= {minimum} x {base}", "ratio": round(figures[name] / figures[base], 3),
               "met": figures[name] / figures[base] >= minimum}
              for name, base, minimum in targets if name in figures and base in figures]
    about = dict(about, load_average_1m_at_end=round(os.getloadavg()[0], 2))
    result = {name: round(value, 1) for name, value in figures.items()}
    result.update(machine=about, settings=settings, ratios=ratios, targets=checks,
                  passes={name: [round(v, 1) for v in values] for name, values in passes.items()})
    if FLAGS.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"{about['cpu']}, {about['cores']} cores, TF {about['tensorflow']}, Keras {about['keras']}; "
          f"load average {about['load_average_1m_at_start']} -> {about['load_average_1m_at_end']}")
    print(", ".join(f"{k}={v}" for k, v in settings.items()))
    width = max(len(name) for name in figures) + 2
    columns = [base for base in ("image_data_generator_seed_recipe", "decode_limit") if base in figures]
    print(f"{'method':{width}}{'img/s':>9}  " + "  ".join(f"x {c}" for c in columns) + "   passes")
    for name, value in figures.items():
        cells = "  ".join(f"{ratios[name]['x_' + c]:>{len(c) + 2}.2f}" for c in columns)
        print(f"{name:{width}}{value:9.1f}  {cells}   {', '.join(f'{v:.0f}' for v in passes[name])}")
    for check in checks:
        print(f"target {check['target']}: {check['ratio']:.2f}  {'met' if check['met'] else 'NOT MET'}")
    if not all(check["met"] for check in checks):
        print("where the time goes: python tools/bench_input.py --profile")
    return result


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
    report(figures, passes, machine(), {"batch_size": FLAGS.batch_size, "image_size": FLAGS.image_size},
           targets=(("tltrain_augment_seed_recipe", "keras_layers_seed_recipe", 1.0),))


def _cpu_ms_per_image(run_once, images: int, repeats: int = 3) -> float:
    """Median process CPU time per image of run_once() (which handles `images` images), after one warm-up."""
    run_once()
    costs = []
    for _ in range(repeats):
        start = time.process_time()
        run_once()
        costs.append((time.process_time() - start) * 1000 / images)
    return statistics.median(costs)


def profile(images_dir: str, records_dir: str, num_classes: int) -> None:
    """CPU cost of every stage on one thread: robust to other load, unlike images/second. The host stages
    run in tf.data with one thread; the augmentation as the train step runs it. Two cores then bound the
    throughput at 2000 / (host + augment) images/second, before any overlap loss."""
    import tensorflow as tf

    from tltrain import augment, data, records
    from tltrain.config import AugmentConfig, DataConfig
    from tltrain.dataset_metadata import DatasetMetadata

    count = 512
    encoded = train_jpeg_bytes(records_dir)[:count]
    serialized = list(tf.data.TFRecordDataset(
        DatasetMetadata.read(records_dir).shard_paths("train")).take(count).as_numpy_iterator())
    cfg = DataConfig(records_dir=records_dir)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False

    def host(elements, fn):
        dataset = tf.data.Dataset.from_tensor_slices(elements).map(fn).batch(64).with_options(options)
        return lambda: [None for _ in dataset]

    size = FLAGS.image_size

    def crop(e):
        return tf.image.decode_and_crop_jpeg(e, data.random_crop_window(tf.io.extract_jpeg_shape(e), cfg), channels=3)

    stages = {  # [0, 0]: one pixel out, so no stage is pruned or pays for copying its output
        "decode the whole JPEG (decode_limit's work)": host(encoded, lambda e: tf.io.decode_jpeg(e, 3)[0, 0]),
        "parse the record": host(serialized, lambda s: tf.strings.length(records.parse_example(s)["image/encoded"])),
        "pick a random crop window": host(encoded, lambda e: data.random_crop_window(tf.io.extract_jpeg_shape(e), cfg)),
        "decode only the crop": host(encoded, lambda e: crop(e)[0, 0]),
        "decode the crop, resize to uint8": host(encoded, lambda e: data.decode_for_train(e, size, cfg)),
        "tltrain host total: parse, crop, resize": host(
            serialized, lambda s: data.decode_for_train(records.parse_example(s)["image/encoded"], size, cfg)),
    }
    augmenter = augment.Augmenter(AugmentConfig(preset="seed_recipe"), num_classes)
    batch = tf.cast(tf.random.stateless_uniform([FLAGS.batch_size, size, size, 3], [0, 0], maxval=256,
                                                dtype=tf.int32), tf.uint8)
    labels = tf.one_hot(tf.range(FLAGS.batch_size) % num_classes, num_classes)
    step = tf.function(lambda seed: augmenter(batch, labels, seed)[0])
    costs = {name: _cpu_ms_per_image(run_once, count) for name, run_once in stages.items()}
    steps = max(1, count // FLAGS.batch_size)
    costs["seed recipe augmentation on the device"] = _cpu_ms_per_image(
        lambda: [step(tf.constant([0, i], tf.int64)).shape for i in range(steps)], steps * FLAGS.batch_size)
    generator = image_data_generator_methods(images_dir)[1]  # seed recipe; single-threaded, so img/s = 1000/ms
    generator.next_batch = generator.start()
    costs["ImageDataGenerator seed recipe (all of it)"] = _cpu_ms_per_image(
        lambda: [generator.next_batch() for _ in range(2)], 2 * FLAGS.batch_size)
    print(f"CPU milliseconds per image, each stage alone on one thread ({len(encoded)} images, median of 3)")
    for name, cost in costs.items():
        print(f"{cost:6.2f} ms  {name}")
    host_ms = costs["tltrain host total: parse, crop, resize"]
    device_ms = costs["seed recipe augmentation on the device"]
    cores = len(os.sched_getaffinity(0))
    print(f"ceilings on {cores} cores (no overlap loss): decode_limit {cores * 1000 / costs[next(iter(costs))]:.0f} "
          f"img/s, tltrain {cores * 1000 / host_ms:.0f}, tltrain_augmented {cores * 1000 / (host_ms + device_ms):.0f}, "
          f"image_data_generator_seed_recipe {1000 / costs['ImageDataGenerator seed recipe (all of it)']:.0f}")


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
    about = machine()
    images_dir = prepare_images()
    records_dir = prepare_records(images_dir)
    from tltrain import data
    from tltrain.config import DataConfig

    num_classes = data.dataset_info(DataConfig(records_dir=records_dir)).num_classes
    if FLAGS.profile:
        return profile(images_dir, records_dir, num_classes)
    methods = [decode_limit(train_jpeg_bytes(records_dir)), *tltrain_methods(records_dir, num_classes),
               *keras_methods(images_dir), *image_data_generator_methods(images_dir)]
    methods = [m for m in methods if m.name in (FLAGS.methods or METHODS)]
    passes = measure(methods)
    figures = {name: statistics.median(values) for name, values in passes.items()}
    settings = {"images": images_dir, "image_size": FLAGS.image_size, "batch_size": FLAGS.batch_size,
                "passes": FLAGS.passes, "iteration": "one iterator over .repeat() per method, kept for the run"}
    report(figures, passes, about, settings)
    return 0


if __name__ == "__main__":
    app.run(main)
