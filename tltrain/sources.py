"""Where examples come from: TFRecord shards described by dataset.json, or a TFDS data set. Each source gives
the split sizes and classes, one input pipeline's share of a split as serialized examples, and the
((image bytes, raw shape), label) pair of an example; tltrain.data turns them into batches."""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Mapping

import tensorflow as tf

from tltrain import records
from tltrain.config import DataConfig
from tltrain.dataset_metadata import DatasetMetadata

log = logging.getLogger(__name__)

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


class RecordsSource:
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
        start, stop = pipeline_range(sum(c for _, c in shards), context)
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


class TfdsSource:
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


def source(cfg: DataConfig):
    if bool(cfg.records_dir) == bool(cfg.tfds_name):
        raise ValueError("set exactly one of --records_dir and --tfds_name")
    return TfdsSource(cfg) if cfg.tfds_name else RecordsSource(cfg.records_dir)


def pipeline_range(count: int, context: tf.distribute.InputContext) -> tuple[int, int]:
    n, index = context.num_input_pipelines, context.input_pipeline_id
    return index * count // n, (index + 1) * count // n
