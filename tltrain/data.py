"""tf.data input pipelines: records (or a TFDS data set) to uint8 [B,H,W,3] batches for one input pipeline.

Host work is only what must happen on the host: read, decode, crop, resize. The batches stay uint8 (4x fewer
bytes than float32; float32 work on the host after decoding nearly halves throughput here); augmentation and
scaling run on the accelerator (tltrain.augment, the model's preprocess_input).

Training is one iterator over a dataset repeated forever: on the 2-core machine this was built on,
AUTOTUNE with a fresh iterator per epoch ran 30-60% of epochs capped at half speed, one iterator over .repeat()
never did. Evaluation is re-iterated, so it uses explicit parallelism with autotuning off, stable there too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import posixpath
from collections.abc import Mapping

import tensorflow as tf

from tltrain import data_service, records
from tltrain.config import DataConfig
from tltrain.dataset_metadata import DatasetMetadata

log = logging.getLogger(__name__)

PADDING_LABEL = -1  # the label of the examples that pad evaluation batches to equal counts per pipeline
_READ_BUFFER_BYTES = 8 << 20  # per open shard; large reads matter on gs://
_MAX_CYCLE_LENGTH = 16  # shards read at once by one training pipeline


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know before it builds a model: classes and split sizes."""

    class_names: tuple[str, ...]
    num_classes: int
    split_counts: dict[str, int]
    class_counts: Mapping[str, tuple[int, ...]]  # per split, in label order (TFDS: counted when first read)


class _CountedOnDemand(dict):
    """split -> per-class counts, computed the first time a split is looked up (TFDS keeps no such counts,
    and counting means reading every label of the split)."""

    def __init__(self, count_fn):
        super().__init__()
        self._count_fn = count_fn

    def __missing__(self, split: str) -> tuple[int, ...]:
        self[split] = counts = self._count_fn(split)
        return counts


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    return _source(cfg).info()


def eval_steps(cfg: DataConfig, split: str) -> int:
    """Batches of the global batch size that cover every example of `split` once (the last one padded)."""
    return math.ceil(_source(cfg).count(split) / cfg.batch_size)


# ---------------------------------------------------------------------------------------------- decoding


_JPEG_RATIOS = (1, 2, 4, 8)  # the DCT-domain downscales libjpeg offers


def _crop_and_resize(encoded: tf.Tensor, image_size: int, window_fn, raw_shape: tf.Tensor | None = None) -> tf.Tensor:
    """Decodes only the window `window_fn(shape)` picks, then resizes it to image_size x image_size uint8.

    JPEG goes through decode_and_crop_jpeg: it stops below the window and skips the IDCT outside it; and when
    the window's short side is at least 2, 4 or 8 times image_size, it decodes at 1/2, 1/4 or 1/8 scale in the
    DCT domain (a few times faster, and a cleaner downscale than bilinear alone). Anything else goes through
    decode_image then a slice. The bytes decide, not image/format: the same code serves TFDS and raw files;
    only raw-pixel records (raw_shape [h, w, c], all zeros for encoded images) have no bytes to tell them by.
    """

    def jpeg():
        window = window_fn(tf.io.extract_jpeg_shape(encoded))
        short_side = tf.minimum(window[2], window[3])
        halvings = tf.add_n([tf.cast(short_side >= r * image_size, tf.int32) for r in _JPEG_RATIOS[1:]])

        def decode(ratio: int):
            return lambda: tf.image.decode_and_crop_jpeg(encoded, window // ratio, channels=3, ratio=ratio)

        return tf.switch_case(halvings, [decode(ratio) for ratio in _JPEG_RATIOS])

    def other():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return _slice(image, window_fn(tf.shape(image)))

    def encoded_image():
        return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)

    def raw():
        return _slice(_raw_pixels(encoded, raw_shape), window_fn(raw_shape))

    if raw_shape is None:
        return _resize_uint8(encoded_image(), image_size)
    return _resize_uint8(tf.cond(raw_shape[0] > 0, raw, encoded_image), image_size)


def _raw_pixels(encoded: tf.Tensor, raw_shape: tf.Tensor) -> tf.Tensor:
    """A raw-pixel record's bytes (records.RAW_FORMAT) as uint8 [h, w, 3]; one channel is repeated three times."""
    image = tf.reshape(tf.io.decode_raw(encoded, tf.uint8), raw_shape)
    return tf.tile(image, tf.stack([1, 1, 3 // raw_shape[2]]))


def _decode_whole(encoded: tf.Tensor, raw_shape: tf.Tensor) -> tf.Tensor:
    """The whole image as uint8 [h, w, 3], from encoded bytes or raw pixels."""
    return tf.cond(raw_shape[0] > 0, lambda: _raw_pixels(encoded, raw_shape),
                   lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))


def _resize_uint8(image: tf.Tensor, size: int | tf.Tensor) -> tf.Tensor:
    """Bilinear resize to size x size (int) or to the [height, width] tensor, rounded back to uint8.

    Measured here, per 224x224 output: resizing float32 pixels is faster than resizing uint8 ones even with the
    cast (0.28 against 0.45 ms: the float kernel vectorises); and as bilinear values of uint8 pixels stay in
    [0, 255], +0.5 and a truncating cast round them in one pass instead of round + saturate_cast."""
    square = isinstance(size, int)
    resized = tf.image.resize(tf.cast(image, tf.float32), [size, size] if square else size, method="bilinear")
    rounded = tf.cast(resized + 0.5, tf.uint8)
    return tf.ensure_shape(rounded, [size, size, 3]) if square else rounded


def _slice(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    return tf.slice(image, tf.stack([window[0], window[1], 0]), tf.stack([window[2], window[3], 3]))


def _center_window(shape: tf.Tensor, crop_fraction: float) -> tf.Tensor:
    """[y, x, h, w] of the centred square covering crop_fraction of the short side (the Inception eval crop)."""
    height, width = shape[0], shape[1]
    side = tf.cast(crop_fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    side = tf.maximum(side, 1)
    return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def random_crop_window(shape: tf.Tensor, cfg: DataConfig) -> tf.Tensor:
    """[y, x, h, w] of an Inception-style random crop (cfg.crop_area_range and crop_aspect_range) of an image
    of `shape`; the centre crop of evaluation when no such window fits in 10 attempts."""
    area_range, aspect_range = tuple(cfg.crop_area_range), tuple(cfg.crop_aspect_range)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        min_object_covered=0.1,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))  # the op returns the whole image when it gives up
    return tf.where(failed, _center_window(shape, cfg.eval_crop_fraction), window)


def decode_for_eval(encoded: tf.Tensor, image_size: int, crop_fraction: float,
                    raw_shape: tf.Tensor | None = None) -> tf.Tensor:
    """Encoded image (scalar string) -> uint8 [image_size, image_size, 3], centre-cropped. Eval, predict and the
    export's serving signature all use this, so a served model sees exactly what evaluation saw. raw_shape:
    [h, w, c] when `encoded` holds raw pixels (records.RAW_FORMAT), zeros when it is an encoded image."""
    return _crop_and_resize(encoded, image_size, lambda shape: _center_window(shape, crop_fraction), raw_shape)


def decode_for_train(encoded: tf.Tensor, image_size: int, cfg: DataConfig,
                     raw_shape: tf.Tensor | None = None) -> tf.Tensor:
    """Encoded image -> uint8 [image_size, image_size, 3]: a random Inception crop (cfg's area and aspect
    ranges), decoding only the crop, resized. raw_shape as in decode_for_eval."""
    return _crop_and_resize(encoded, image_size, lambda shape: random_crop_window(shape, cfg), raw_shape)


def _random_crop_decoded(image: tf.Tensor, image_size: int, cfg: DataConfig) -> tf.Tensor:
    """The training crop applied to an already decoded image (the cache path)."""
    return _resize_uint8(_slice(image, random_crop_window(tf.shape(image), cfg)), image_size)


def _decode_for_cache(encoded: tf.Tensor, raw_shape: tf.Tensor, image_size: int) -> tf.Tensor:
    """The whole image with its short side resized to image_size: small enough to keep, big enough to crop."""
    image = _decode_whole(encoded, raw_shape)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = image_size / tf.reduce_min(shape)
    return _resize_uint8(image, tf.cast(tf.math.ceil(shape * scale), tf.int32))


def warn_if_records_oversized(cfg: DataConfig, image_size: int, sample: int = 64) -> str | None:
    """Logs one warning line, and returns it, when the training images of cfg.records_dir are far larger (a
    median shorter side over twice records.short_side_for) than training at image_size needs: decoding the
    surplus pixels slows the input pipeline for nothing. Looks at the first `sample` records only."""
    if not cfg.records_dir:
        return None
    source = _RecordsSource(cfg.records_dir)
    if source.metadata.resize_for >= image_size:
        return None
    needed = records.short_side_for(image_size, tuple(cfg.crop_area_range), cfg.eval_crop_fraction)
    first_shard = source.shards(cfg.train_split)[0][0]
    shapes = source._read([first_shard]).take(sample).map(lambda serialized: tf.minimum(
        *[records.parse_example(serialized)[f"image/{side}"] for side in ("height", "width")]))
    short_sides = sorted(int(side) for side in shapes.as_numpy_iterator())
    median = short_sides[len(short_sides) // 2] if short_sides else 0
    if median <= 2 * needed:
        return None
    message = (f"{cfg.records_dir}: the training images' shorter side is {median} px (median of the first "
               f"{len(short_sides)}), {median / needed:.1f}x the {needed} px that --image_size={image_size} needs; "
               f"decoding the surplus slows the input: rewrite them with tools/make_tfrecords.py "
               f"--resize_for={image_size}")
    log.warning("%s", message)
    return message


# ----------------------------------------------------------------------------------------------- sources


class _RecordsSource:
    """TFRecord shards written by tltrain.convert, described by dataset.json."""

    def __init__(self, records_dir: str):
        self.records_dir = records_dir
        self.metadata = DatasetMetadata.read(records_dir)
        self.compression = self.metadata.compression
        self.num_classes = self.metadata.num_classes

    def info(self) -> DatasetInfo:
        splits = self.metadata.splits
        return DatasetInfo(
            class_names=self.metadata.class_names,
            num_classes=self.num_classes,
            split_counts={name: split.count for name, split in splits.items()},
            class_counts={name: split.per_class for name, split in splits.items()},
        )

    def count(self, split: str) -> int:
        return sum(count for _, count in self.shards(split))

    def shards(self, split: str) -> list[tuple[str, int]]:
        """[(path, example count)] of the split, each checked to exist (a clear error beats a hang on gs://)."""
        paths = self.metadata.shard_paths(split)
        shards = [(path, shard.count) for path, shard in zip(paths, self.metadata.splits[split].shards)]
        for path, _ in shards:
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"{path}: shard listed in {records.METADATA_FILE} is missing")
        return shards

    def _read(self, files) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(files, self.compression, buffer_size=_READ_BUFFER_BYTES)

    def _read_counted(self, path: tf.Tensor, count: tf.Tensor) -> tf.data.Dataset:
        """One shard, failing when it ends before or after the count in dataset.json (read_failure names it)."""
        return self._read(path).apply(tf.data.experimental.assert_cardinality(count))

    def train_examples(self, split: str, context: tf.distribute.InputContext, repeat: bool,
                       seed: int | None) -> tf.data.Dataset:
        """Serialized examples of this pipeline's share: its own shards, in a new order every epoch; or, with
        fewer shards than pipelines, every n-th example of all of them (each pipeline then reads everything)."""
        shards = self.shards(split)
        n, index = context.num_input_pipelines, context.input_pipeline_id
        if len(shards) < n:
            log.warning("%s: %d '%s' shards for %d input pipelines: sharding by example, every pipeline reads "
                        "every shard; write at least %d shards", self.records_dir, len(shards), split, n, n)
            examples = _slices(shards).flat_map(self._read_counted).shard(n, index)
            return examples.repeat() if repeat else examples
        files = [path for path, _ in shards[index::n]]
        log.info("input pipeline %d of %d reads %d '%s' shards of %s: %s", index, n, len(files), split,
                 self.records_dir, " ".join(posixpath.basename(path) for path in files))
        names = _slices(shards[index::n])
        if repeat:
            names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
        return names.interleave(
            self._read_counted, cycle_length=min(len(files), _MAX_CYCLE_LENGTH),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=False,
        )

    def eval_examples(self, split: str, context: tf.distribute.InputContext) -> tuple[tf.data.Dataset, int]:
        """This pipeline's contiguous range of the split (sizes differ by at most one), read in file order;
        only the shards overlapping the range are opened. Returns (serialized examples, how many)."""
        shards = self.shards(split)
        start, stop = _pipeline_range(sum(c for _, c in shards), context)
        files, offset, skip = [], 0, 0
        for path, count in shards:
            if offset < stop and offset + count > start:
                if not files:
                    skip = start - offset
                files.append(path)
            offset += count
        examples = self._read(files).skip(skip).take(stop - start)
        # A shard holding fewer examples than dataset.json says fails loudly at the end instead of losing them.
        return examples.apply(tf.data.experimental.assert_cardinality(stop - start)), stop - start

    def to_pair(self, serialized: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
        """((image bytes, raw_shape), label); raw_shape is [h, w, c] for raw-pixel records, else zeros."""
        example = records.parse_example(serialized)
        label, encoded = example["image/class/label"], example["image/encoded"]
        shape = tf.cast(tf.stack([example[f"image/{k}"] for k in ("height", "width", "channels")]), tf.int32)
        raw = tf.equal(example["image/format"], records.RAW_FORMAT)
        raw_ok = tf.logical_or(tf.logical_not(raw), tf.logical_and(
            tf.equal(tf.strings.length(encoded), tf.reduce_prod(shape)), tf.reduce_any(tf.equal(shape[2], [1, 3]))))
        checks = [
            tf.debugging.Assert(tf.logical_and(label >= 0, label < self.num_classes), [
                f"{self.records_dir}: label outside [0, {self.num_classes}) in", example["image/filename"], label]),
            tf.debugging.Assert(raw_ok, [
                f"{self.records_dir}: raw pixels that are not height x width x channels (1 or 3) bytes in",
                example["image/filename"], shape]),
        ]
        with tf.control_dependencies(checks):
            return (tf.identity(encoded), tf.where(raw, shape, tf.zeros_like(shape))), tf.cast(label, tf.int32)


def _slices(shards: list[tuple[str, int]]) -> tf.data.Dataset:
    """(path, count) elements of the shards."""
    counts = tf.constant([count for _, count in shards], tf.int64)
    return tf.data.Dataset.from_tensor_slices(([path for path, _ in shards], counts))


class _TfdsSource:
    """A TFDS data set (downloaded and prepared on first use), read as encoded bytes so decoding and cropping
    are ours. Pipelines read disjoint even slices of a split (tfds.even_splits)."""

    def __init__(self, cfg: DataConfig):
        import tensorflow_datasets as tfds

        self.tfds = tfds
        self.name, self.data_dir = cfg.tfds_name, cfg.tfds_data_dir
        self.builder = tfds.builder(self.name, data_dir=self.data_dir)
        self.builder.download_and_prepare()
        self.image_key, self.label_key = self.builder.info.supervised_keys or ("image", "label")

    def _load(self, split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        return self.builder.as_dataset(
            split=split, shuffle_files=shuffle_files, as_supervised=True,
            decoders={self.image_key: self.tfds.decode.SkipDecoding()},
            read_config=self.tfds.ReadConfig(shuffle_seed=seed),
        )

    def info(self) -> DatasetInfo:
        names = list(self.builder.info.splits) or ["train"]  # mock data (tests) has no split metadata
        label_names = tuple(self.builder.info.features[self.label_key].names)
        return DatasetInfo(
            class_names=label_names, num_classes=len(label_names),
            split_counts={name: self.count(name) for name in names},
            class_counts=_CountedOnDemand(self._class_counts),
        )

    def _class_counts(self, split: str) -> tuple[int, ...]:
        """TFDS metadata has split sizes but not per-class counts: one pass over the labels (no decoding)."""
        num_classes = self.builder.info.features[self.label_key].num_classes
        labels = self._load(split, False).map(lambda _, label: label)
        counts = labels.reduce(tf.zeros([num_classes], tf.int64),
                               lambda acc, label: acc + tf.one_hot(label, num_classes, dtype=tf.int64))
        return tuple(int(c) for c in counts.numpy())

    def count(self, split: str) -> int:
        try:
            return int(self.builder.info.splits[split].num_examples)
        except KeyError:  # mock data, or a split TFDS cannot size: count it
            return int(self._load(split, False).reduce(0, lambda n, _: n + 1).numpy())

    def _pipeline_split(self, split: str, context: tf.distribute.InputContext) -> str:
        n = context.num_input_pipelines
        return split if n == 1 else self.tfds.even_splits(split, n)[context.input_pipeline_id]

    def train_examples(self, split: str, context: tf.distribute.InputContext, repeat: bool,
                       seed: int | None) -> tf.data.Dataset:
        examples = self._load(self._pipeline_split(split, context), shuffle_files=repeat, seed=seed)
        return examples.repeat() if repeat else examples

    def eval_examples(self, split: str, context: tf.distribute.InputContext) -> tuple[tf.data.Dataset, int]:
        sub_split = self._pipeline_split(split, context)
        return self._load(sub_split, False), self.count(sub_split)

    @staticmethod
    def to_pair(encoded: tf.Tensor, label: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], tf.Tensor]:
        return (encoded, tf.zeros([3], tf.int32)), tf.cast(label, tf.int32)  # always encoded: no raw shape


def _source(cfg: DataConfig):
    if bool(cfg.records_dir) == bool(cfg.tfds_name):
        raise ValueError("set exactly one of --records_dir and --tfds_name")
    return _TfdsSource(cfg) if cfg.tfds_name else _RecordsSource(cfg.records_dir)


def _pipeline_range(count: int, context: tf.distribute.InputContext) -> tuple[int, int]:
    n, index = context.num_input_pipelines, context.input_pipeline_id
    return index * count // n, (index + 1) * count // n


# --------------------------------------------------------------------------------------------- pipelines


def _context(input_context: tf.distribute.InputContext | None) -> tf.distribute.InputContext:
    return input_context or tf.distribute.InputContext()


def _options(training: bool) -> tf.data.Options:
    """Options set on purpose rather than inherited.

    Training: order does not matter (deterministic=False lets a slow element not stall the rest); slack on the
    final prefetch leaves the host room at step starts; autotune on (one long-lived iterator). Evaluation:
    deterministic, autotune off (its iterator is re-created every evaluation). Every map call runs on one
    thread (parallelism comes from num_parallel_calls, not from ops fighting over the cores), and auto-sharding
    is off because every pipeline already reads only its own share.
    """
    options = tf.data.Options()
    options.deterministic = not training
    options.autotune.enabled = training
    options.experimental_slack = training
    options.threading.max_intra_op_parallelism = 1
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _parallel_calls(cfg: DataConfig, training: bool) -> int:
    if cfg.num_parallel_calls > 0:
        return cfg.num_parallel_calls
    return tf.data.AUTOTUNE if training else (os.cpu_count() or 1)


def make_train_dataset(cfg: DataConfig, image_size: int,
                       input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """(uint8 [b, image_size, image_size, 3], int32 [b]) batches of this input pipeline, repeated forever.

    b is the per-replica batch. Shards are split between pipelines, shuffled per epoch, read in parallel;
    examples go through a shuffle buffer, then a random Inception crop that decodes only the cropped part.
    With cfg.cache the decoded images (short side = image_size) are kept in memory after the first epoch and
    the random crop is taken from them. With cfg.data_service the work runs on tf.data service workers.
    """
    context = _context(input_context)
    batch = context.get_per_replica_batch_size(cfg.batch_size)
    source = _source(cfg)
    calls = _parallel_calls(cfg, training=True)
    examples = source.train_examples(cfg.train_split, context, repeat=not cfg.cache, seed=cfg.seed)
    if cfg.cache:
        images = examples.map(lambda *e: _cache_pair(source.to_pair(*e), image_size), num_parallel_calls=calls)
        images = images.cache().repeat().shuffle(cfg.shuffle_buffer, seed=cfg.seed)
        images = images.map(lambda image, label: (_random_crop_decoded(image, image_size, cfg), label),
                            num_parallel_calls=calls)
    else:
        images = examples.shuffle(cfg.shuffle_buffer, seed=cfg.seed).map(
            lambda *e: _train_pair(source.to_pair(*e), image_size, cfg), num_parallel_calls=calls)
    batches = images.batch(batch, drop_remainder=True)
    if cfg.data_service:
        batches = data_service.distribute(batches, cfg)
    return batches.prefetch(tf.data.AUTOTUNE).with_options(_options(training=True))


def train_record_decoder(cfg: DataConfig, image_size: int):
    """serialized record of cfg.records_dir -> (uint8 image, label), the very function make_train_dataset maps
    over the records without --cache (benchmarks run it outside tf.data to see what tf.data costs)."""
    source = _RecordsSource(cfg.records_dir)
    return lambda serialized: _train_pair(source.to_pair(serialized), image_size, cfg)


def _train_pair(pair, image_size: int, cfg: DataConfig):
    (encoded, raw_shape), label = pair
    return decode_for_train(encoded, image_size, cfg, raw_shape), label


def _cache_pair(pair, image_size: int):
    (encoded, raw_shape), label = pair
    return _decode_for_cache(encoded, raw_shape, image_size), label


def make_eval_dataset(cfg: DataConfig, image_size: int, split: str = "validation",
                      input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """(uint8 [b,H,W,3], int32 [b]) batches, centre-cropped, each example of `split` exactly once over all
    input pipelines. Every pipeline yields the same number of batches, eval_steps() steps' worth, padded at the
    end with zero images labelled PADDING_LABEL (which the evaluator must mask out)."""
    context = _context(input_context)
    source = _source(cfg)
    examples, count = source.eval_examples(split, context)
    images = examples.map(lambda *e: _eval_pair(source.to_pair(*e), image_size, cfg),
                          num_parallel_calls=_parallel_calls(cfg, training=False))
    if cfg.cache:
        images = images.cache()
    blank = tf.zeros([image_size, image_size, 3], tf.uint8)
    batches = pad_eval_batches(images, count, source.count(split), blank, cfg.batch_size, context)
    return batches.prefetch(2).with_options(_options(training=False))


def pad_eval_batches(examples: tf.data.Dataset, count: int, split_count: int, blank: tf.Tensor, global_batch: int,
                     context: tf.distribute.InputContext) -> tf.data.Dataset:
    """One input pipeline's `count` (example, label) pairs of a split of `split_count`, batched and padded at the
    end with `blank` examples labelled PADDING_LABEL, so that every pipeline yields the same number of full
    batches: ceil(split_count / global_batch) steps' worth (a collective step needs every replica)."""
    batch = context.get_per_replica_batch_size(global_batch)
    batches_per_step = context.num_replicas_in_sync // context.num_input_pipelines
    total = math.ceil(split_count / global_batch) * batches_per_step * batch
    padding = tf.data.Dataset.from_tensors((blank, tf.constant(PADDING_LABEL, tf.int32))).repeat(total - count)
    return examples.concatenate(padding).batch(batch, drop_remainder=True)


def _eval_pair(pair, image_size: int, cfg: DataConfig):
    (encoded, raw_shape), label = pair
    return decode_for_eval(encoded, image_size, cfg.eval_crop_fraction, raw_shape), label


def make_predict_dataset(paths: list[str], image_size: int, crop_fraction: float,
                         batch_size: int) -> tf.data.Dataset:
    """(int32 [b] indices into `paths`, uint8 [b, H, W, 3] images) batches of the image files, in order,
    decoded like evaluation. A file that cannot be read or decoded is left out (its index never comes), so one
    bad file does not stop the others; predict_failure says why it was left out.

    Files TF would decode differently from the converter (TIFF, transparent or 16-bit PNG, CMYK, EXIF-rotated,
    ...) are turned into upright RGB PNG bytes with Pillow first, as the converter does for the records.
    """
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: no such image file")

    def encoded_files():
        for index, path in enumerate(paths):
            with contextlib.suppress(ValueError, OSError, tf.errors.OpError):
                yield index, _tf_decodable_bytes(path)

    encoded = tf.data.Dataset.from_generator(
        encoded_files, output_signature=(tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.string)))
    images = encoded.map(lambda index, e: (index, decode_for_eval(e, image_size, crop_fraction)),
                         num_parallel_calls=os.cpu_count() or 1).ignore_errors()
    return images.batch(batch_size).prefetch(2).with_options(_options(training=False))


def predict_failure(path: str, image_size: int, crop_fraction: float) -> str:
    """Why make_predict_dataset left `path` out: the error of reading and decoding it alone, on one line."""
    try:
        decode_for_eval(tf.constant(_tf_decodable_bytes(path)), image_size, crop_fraction)
    except (ValueError, OSError, tf.errors.OpError) as error:
        message = error.message if isinstance(error, tf.errors.OpError) else str(error)
        return " ".join(message.removeprefix(f"{path}: ").split())[:200]
    return "it decodes alone; it failed together with the others (out of memory?)"


_TF_DECODES_AS_IS = {"JPEG", "PNG", "BMP", "WEBP"}  # Pillow format names, in modes RGB or L
_EXIF_ORIENTATION = 0x0112


def _tf_decodable_bytes(path: str) -> bytes:
    """The file's bytes when TF decodes them to what training saw, else an upright RGB PNG made with the
    converter's own to_rgb (transparency on white, 16-bit scaled, CMYK converted), as the records hold them."""
    from PIL import Image, ImageOps

    from tltrain import convert

    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        image = Image.open(io.BytesIO(data))
        upright = image.getexif().get(_EXIF_ORIENTATION, 1) == 1
        if upright and image.format in _TF_DECODES_AS_IS and image.mode in ("RGB", "L"):
            return data
        image = convert.to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:  # Pillow raises many types for undecodable files
        raise ValueError(f"{path}: not an image Pillow can read ({error})") from error
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
