"""Cached features (--cache_features): the frozen part of the network as one forward pass per example.

With the backbone frozen, phase 1 trains only the head, yet every epoch would push every image through the
backbone again, and that forward pass is nearly the whole cost of the epoch. Here it runs once: the pooled (or
flattened, per --pooling) features go to TFRecord shards under model_dir/feature_cache/<key> (or
--feature_cache_dir), and the head trains on them. The head is not a copy: the head model is made of the
classifier's own head layers, so training it trains the classifier, and phase 2, checkpoints, evaluation,
export and predict see one model whichever way phase 1 ran.

One cache entry holds one split's features. Its key hashes everything they depend on: the backbone's weight
values as loaded (from ImageNet, a file or a seed alike), the model, alpha, feature layer, pooling, image size,
precision, eval crop, the split's digest (in dataset.json), and for augmented views the crop and augmentation
settings. An entry is written under temporary names and marked complete by cache.json, written last: an
interrupted build is redone, a complete entry is reused by every later run with the same key.

The training split's entry holds the centre-cropped view of every example, plus K augmented views with
--cache_augmented_views=K (random crops from the training pipeline, then the on-device augmentation without
mixup/cutmix; "about" K: they are the first K epochs of the repeated training stream). A head epoch
is as many steps as an image epoch, each batch drawn from all stored views.

--cache_fine_tune does the same for phase 2: the layers below --fine_tune_at stay frozen (BatchNorm in
inference mode), so without augmentation their output per example never changes. It is stored once (the
entry's key adds the cut layer), and phase 2 trains the classifier's own layers from the cut on over it,
which skips the frozen part's forward pass and the image pipeline in every step. With --epochs=0 there is
no phase 1 (and no pooled cache to build): the head starts with the top blocks. Without --cache_fine_tune,
phase 2 trains on augmented images, and only its validations run on the stored activations of the
validation split (phases.validates_cached).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import posixpath
import time
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from tltrain import augment, data, models, progbar, records, steps
from tltrain import evaluate as evaluate_lib
from tltrain.config import RunConfig
from tltrain.dataset_metadata import DatasetMetadata
from tltrain.job import Job

log = logging.getLogger(__name__)
CACHE_DIR = "feature_cache"
MARKER_FILE = "cache.json"
FORMAT_VERSION = 1
_SHARD_BYTES = 128 << 20
_SHUFFLE_BYTES = 256 << 20  # shuffle buffer of the head's training stream
_IN_MEMORY_BYTES = 2 << 30  # entries up to this size are read from disk once, then kept in memory
_SCHEMA = {"features": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}


def validate(cfg: RunConfig) -> None:
    """One-line errors for cache flags that cannot work, before anything is built."""
    t = cfg.train
    if not t.cache_features:
        for flag in ("cache_augmented_views", "cache_fine_tune"):
            if getattr(t, flag):
                raise ValueError(f"--{flag}: only applies with --cache_features")
        return
    if t.cache_fine_tune and (t.freeze != "backbone" or t.fine_tune_epochs <= 0):
        raise ValueError("--cache_fine_tune: needs a phase 2 (--freeze=backbone, --fine_tune_epochs > 0)")
    if t.freeze != "backbone" or (t.epochs <= 0 and not t.cache_fine_tune):
        raise ValueError("--cache_features: needs a phase 1 with a frozen backbone (--freeze=backbone, --epochs > 0)")
    if cfg.strategy.strategy == "multi_worker":
        raise ValueError("--cache_features: not supported with --strategy=multi_worker (one process builds the "
                         "cache); build it with a single-worker run first, or train without it")


def applies(cfg: RunConfig, phase_name: str) -> bool:
    """Whether this phase trains on cached features: phase 1 (the frozen backbone) with --cache_features, and
    phase 2 (the layers from --fine_tune_at on) with --cache_fine_tune too."""
    t = cfg.train
    return t.cache_features and (phase_name == "transfer" or (phase_name == "fine_tune" and t.cache_fine_tune))


@dataclasses.dataclass(frozen=True)
class Entry:
    """A complete cache entry: `count` feature vectors of `dim` float32 values with labels, in `files`."""

    directory: str
    files: tuple[str, ...]
    count: int
    dim: int

    @property
    def nbytes(self) -> int:
        return self.count * self.dim * 4


class CachedTask:
    """A phases.PhaseTask on cached features: the head model (the classifier's own layers above the cached ones,
    on a features input), stacked steps_per_execution batches of (features, labels), and the evaluator over the
    cached validation features. No augmentation: augmented views, if any, were made when the cache was built."""

    def __init__(self, head: keras.Model, iterator: Iterator, evaluator: Callable | None):
        self.model = head
        self._iterator = iterator
        self._evaluator = evaluator

    @staticmethod
    def augmenter(features: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        del seed
        return features, labels

    def batches(self) -> Iterator:
        return self._iterator

    def evaluate(self, on_step=None):
        return self._evaluator(on_step) if self._evaluator else None

    def augmented_inputs(self, batch, step: int) -> None:
        del batch, step  # feature vectors, not images


# ------------------------------------------------------------------------------------------------- models


def _pool_index(model: keras.Model, pooling: str) -> int:
    names = [layer.name for layer in model.layers]
    name = f"{pooling}_pool"
    if name not in names:
        raise ValueError(f"{model.name}: no layer {name}; is it a tltrain classifier built with --pooling={pooling}?")
    return names.index(name)


def feature_model(model: keras.Model, pooling: str) -> keras.Model:
    """Pixels -> what the head sees: the classifier up to and including its pooling layer."""
    return keras.Model(model.input, model.layers[_pool_index(model, pooling)].output, name="features")


def head_model(model: keras.Model, pooling: str) -> keras.Model:
    """Features -> class probabilities: the classifier's graph from its pooling layer's output on. Its layers
    are the classifier's own (training this model trains the classifier's head)."""
    return keras.Model(model.layers[_pool_index(model, pooling)].output, model.output, name="head")


def fine_tune_models(model: keras.Model, cfg: RunConfig) -> tuple[keras.Model, keras.Model, str]:
    """(features, head, cut) of phase 2 on cached activations: features = pixels -> the flattened output of the
    last frozen backbone layer below --fine_tune_at (named `cut`; with BatchNorm in inference mode below the cut
    these never change in phase 2); head = those -> class probabilities through the classifier's own layers
    from the cut on. Needs a cut that one tensor crosses, i.e. a block boundary."""
    backbone = model.get_layer("backbone")
    start = models.fine_tune_start(backbone, cfg.model, cfg.train.fine_tune_at)
    if start < 2:
        raise ValueError(f"--cache_fine_tune: --fine_tune_at={cfg.train.fine_tune_at} leaves no frozen layer to cache")
    cut = backbone.layers[start - 1]
    try:
        top = keras.Model(cut.output, backbone.output, name="backbone_top")
    except ValueError as error:
        raise ValueError(f"--cache_fine_tune: --fine_tune_at={cfg.train.fine_tune_at} is not a cut one tensor crosses "
                         f"(use a block name): {error}") from None
    outer = [layer.name for layer in model.layers].index("backbone")
    pixels = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="pixels")
    x = pixels
    for layer in model.layers[1:outer]:  # the preprocessing
        x = layer(x)
    lower = keras.Model(backbone.input, cut.output, name="backbone_lower")
    features = keras.Model(pixels, keras.layers.Flatten()(lower(x)), name="features")
    shape = tuple(cut.output.shape[1:])
    vectors = keras.Input((int(np.prod(shape)),), name="activations")
    x = top(keras.layers.Reshape(shape)(vectors))
    for layer in model.layers[outer + 1:]:  # pooling and head
        x = layer(x)
    return features, keras.Model(vectors, x, name="head"), cut.name


# ---------------------------------------------------------------------------------------------------- keys


def weights_digest(features: keras.Model) -> str:
    """sha256 over the weight shapes and values of the model that computes the cached vectors: they depend on
    nothing else (in phase 2 only the frozen layers below the cut, so a resumed fine-tune reuses its entry)."""
    digest = hashlib.sha256()
    for weight in features.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _records_identity(cfg: RunConfig, split: str) -> str:
    if cfg.data.records_dir:
        return DatasetMetadata.read(cfg.data.records_dir).splits[split].digest
    return f"tfds:{cfg.data.tfds_name}:{split}"


def key_inputs(cfg: RunConfig, weights_digest: str, precision: str, split: str, views: int, cut: str = "") -> dict:
    """Everything an entry's features depend on (stored in its cache.json, hashed into its directory name);
    `cut`: the backbone layer of phase 2's activations ("" = the pooled features of phase 1)."""
    inputs = {
        "format": FORMAT_VERSION, "model": cfg.model.model, "alpha": cfg.model.alpha,
        "feature_layer": cfg.model.feature_layer, "pooling": cfg.model.pooling,
        "image_size": cfg.data.image_size, "precision": precision, "backbone_weights": weights_digest,
        "records": _records_identity(cfg, split), "split": split, "eval_crop_fraction": cfg.data.eval_crop_fraction,
        "augmented_views": views,
    }
    if cut:
        inputs["cut"] = cut
    if views:
        inputs.update(augment=dataclasses.asdict(_view_augment(cfg)), seed=cfg.train.seed,
                      crop_area_range=list(cfg.data.crop_area_range),
                      crop_aspect_range=list(cfg.data.crop_aspect_range))
    return inputs


def entry_directory(cfg: RunConfig, inputs: dict) -> str:
    root = cfg.train.feature_cache_dir or posixpath.join(cfg.train.model_dir, CACHE_DIR)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]
    return posixpath.join(root, f"{inputs['split']}-{key}")


def _view_augment(cfg: RunConfig):
    """The augmentation of the stored views: the run's, without mixup/cutmix (they mix labels across a batch)."""
    return dataclasses.replace(augment.resolve(cfg.augment), mixup_alpha=0.0, cutmix_alpha=0.0)


# --------------------------------------------------------------------------------------------------- build


def read_entry(directory: str) -> Entry | None:
    """The complete entry in `directory`, or None when there is none (or only an interrupted build)."""
    marker = posixpath.join(directory, MARKER_FILE)
    if not tf.io.gfile.exists(marker):
        return None
    with tf.io.gfile.GFile(marker) as f:
        meta = json.load(f)
    files = tuple(posixpath.join(directory, shard["file"]) for shard in meta["shards"])
    if not all(tf.io.gfile.exists(path) for path in files):
        return None
    return Entry(directory, files, int(meta["count"]), int(meta["dim"]))


class _ShardWriter:
    """Feature records spread over `num_shards` files under temporary names; `finish` renames them and writes
    cache.json last, so a complete-looking entry is a complete one. Leftovers of an interrupted build are
    deleted first (two runs must not build the same entry at the same time)."""

    def __init__(self, directory: str, num_shards: int):
        self.directory = directory
        self.names = [f"features-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
        tf.io.gfile.makedirs(directory)
        for leftover in tf.io.gfile.glob(posixpath.join(directory, "*.incomplete")):
            tf.io.gfile.remove(leftover)
        self.writers = [records.RecordWriter(self._temp(name)) for name in self.names]
        self.counts = [0] * num_shards
        self.batches = 0

    def _temp(self, name: str) -> str:
        return posixpath.join(self.directory, f"{name}.incomplete")

    def write(self, features: np.ndarray, labels: np.ndarray) -> None:
        """One batch of real examples, into the next shard (round robin by batch)."""
        shard = self.batches % len(self.writers)
        example = tf.train.Example()
        feature = example.features.feature
        for row, label in zip(features, labels):
            feature["features"].bytes_list.value[:] = [row.tobytes()]
            feature["label"].int64_list.value[:] = [int(label)]
            self.writers[shard].write(example.SerializeToString())
        self.counts[shard] += len(labels)
        self.batches += 1

    def finish(self, meta: dict) -> None:
        for writer in self.writers:
            writer.close()
        for name in self.names:
            tf.io.gfile.rename(self._temp(name), posixpath.join(self.directory, name), overwrite=True)
        meta = {**meta, "count": sum(self.counts),
                "shards": [{"file": name, "count": count} for name, count in zip(self.names, self.counts)]}
        temp = posixpath.join(self.directory, f"{MARKER_FILE}.incomplete")
        with tf.io.gfile.GFile(temp, "w") as f:
            f.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tf.io.gfile.rename(temp, posixpath.join(self.directory, MARKER_FILE), overwrite=True)

    def abort(self) -> None:
        for writer, name in zip(self.writers, self.names):
            writer.close()
            if tf.io.gfile.exists(self._temp(name)):
                tf.io.gfile.remove(self._temp(name))


def _make_extract(job: Job, features: keras.Model, augmenter: augment.Augmenter | None):
    """A tf.function(images, labels, step) -> per-replica float32 features and labels. With an augmenter, the
    images are augmented first, seeded like training at that step."""
    num_classes = len(job.class_names)

    def replica_step(images, labels, step):
        if augmenter is not None:
            images, _ = augmenter(images, tf.one_hot(labels, num_classes), steps.augment_seed(job.cfg.train.seed, step))
        return tf.cast(features(images, training=False), tf.float32), labels

    return tf.function(steps.replicated(job.strategy, replica_step, reduce=False))


def _local(strategy, values) -> np.ndarray:
    return np.concatenate([v.numpy() for v in strategy.experimental_local_results(values)])


def build_entry(job: Job, features: keras.Model, split: str, views: int, inputs: dict) -> Entry:
    """Runs the frozen `features` model over `split` (centre crops, then `views` augmented passes for training)
    and writes the entry; returns it."""
    cfg, strategy = job.cfg, job.strategy
    directory = entry_directory(cfg, inputs)
    started = time.perf_counter()
    dim = int(np.prod(features.output.shape[1:]))
    count = data.dataset_info(cfg.data).split_counts[split]
    size, global_batch = cfg.data.image_size, cfg.data.batch_size
    passes = [(strategy.distribute_datasets_from_function(
        lambda context: data.make_eval_dataset(cfg.data, size, split, context)),
        data.eval_steps(cfg.data, split), None)]
    if views:
        # No shuffle: the first `views` epochs of the stream are then (about) `views` passes over the split.
        view_cfg = dataclasses.replace(cfg, augment=_view_augment(cfg),
                                       data=dataclasses.replace(cfg.data, shuffle_buffer=1))
        passes.append((strategy.distribute_datasets_from_function(
            lambda context: data.make_train_dataset(view_cfg.data, size, context)),
            math.ceil(views * count / global_batch), augment.Augmenter(view_cfg.augment, len(job.class_names))))
    expected_bytes = count * (1 + views) * dim * 4
    writer = _ShardWriter(directory, max(1, math.ceil(expected_bytes / _SHARD_BYTES)))
    progress = progbar.StepProgress(f"feature cache: {split}", sum(n for _, n, _ in passes),
                                      cfg.train.progress_seconds)
    try:
        step = 0
        for dataset, num_steps, augmenter in passes:
            extract = _make_extract(job, features, augmenter)
            for _, (images, labels) in zip(range(num_steps), dataset):
                vectors, labels = extract(images, labels, tf.constant(step, tf.int64))
                vectors, labels = _local(strategy, vectors).reshape(-1, dim), _local(strategy, labels)
                real = labels != data.PADDING_LABEL
                writer.write(vectors[real], labels[real])
                step += 1
                progress.update(step, {"img/s": step * global_batch / (time.perf_counter() - started)})
        progress.close()
        writer.finish({**inputs, "dim": dim, "seconds": round(time.perf_counter() - started, 3)})
    except BaseException:
        writer.abort()
        raise
    entry = read_entry(directory)
    log.info(f"feature cache: built {directory} ({entry.count} vectors of {dim}, {split}, "
             f"{time.perf_counter() - started:.1f}s)")
    return entry


def ensure_entry(job: Job, features: keras.Model, split: str, views: int, weights_digest: str, cut: str = "") -> Entry:
    """The split's cache entry for this backbone (and cut): reused when complete, else built."""
    inputs = key_inputs(job.cfg, weights_digest, job.precision, split, views, cut)
    entry = read_entry(entry_directory(job.cfg, inputs))
    if entry is not None:
        log.info(f"feature cache: reusing {entry.directory} ({entry.count} vectors of {entry.dim}, {split})")
        return entry
    return build_entry(job, features, split, views, inputs)


# ------------------------------------------------------------------------------------------------ datasets


def _parse(serialized: tf.Tensor, dim: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of serialized feature records -> (float32 [b, dim], int32 [b])."""
    parsed = tf.io.parse_example(serialized, _SCHEMA)
    vectors = tf.io.decode_raw(parsed["features"], tf.float32)
    return tf.ensure_shape(vectors, [None, dim]), tf.cast(parsed["label"], tf.int32)


def _pipeline_records(entry: Entry, context: tf.distribute.InputContext) -> tf.data.Dataset:
    serialized = tf.data.TFRecordDataset(list(entry.files))
    return serialized.shard(context.num_input_pipelines, context.input_pipeline_id)


def train_features(entry: Entry, cfg: RunConfig, context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """(float32 [b, dim], int32 [b]) batches of this input pipeline, shuffled (seeded by --seed), forever."""
    context = context or tf.distribute.InputContext()
    batch = context.get_per_replica_batch_size(cfg.data.batch_size)
    serialized = _pipeline_records(entry, context)
    if entry.nbytes <= _IN_MEMORY_BYTES:
        serialized = serialized.cache()
    buffer = max(batch, min(entry.count, _SHUFFLE_BYTES // (4 * entry.dim)))
    batches = serialized.shuffle(buffer, seed=cfg.train.seed).repeat().batch(batch, drop_remainder=True)
    return batches.map(functools.partial(_parse, dim=entry.dim), num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def eval_features(entry: Entry, cfg: RunConfig, context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """(float32 [b, dim], int32 [b]) batches like data.make_eval_dataset's: every vector exactly once over all
    pipelines, each pipeline padded (data.pad_eval_batches) to the same number of full batches."""
    context = context or tf.distribute.InputContext()
    count = len(range(context.input_pipeline_id, entry.count, context.num_input_pipelines))
    vectors = _pipeline_records(entry, context).batch(256).map(functools.partial(_parse, dim=entry.dim)).unbatch()
    blank = tf.zeros([entry.dim], tf.float32)
    return data.pad_eval_batches(vectors, count, entry.count, blank, cfg.data.batch_size, context).prefetch(2)


# ------------------------------------------------------------------------------------------------- phases


def cached_task(job: Job, model: keras.Model, phase_name: str = "transfer") -> CachedTask:
    """Makes sure the cache entries exist (building what is missing) and returns what the phase trains with:
    phase 1 on pooled features, phase 2 (--cache_fine_tune) on the activations below --fine_tune_at."""
    cfg, strategy = job.cfg, job.strategy
    fine_tune = phase_name == "fine_tune"
    views = 0 if fine_tune else cfg.train.cache_augmented_views
    resolved = augment.resolve(cfg.augment)
    if not views and any(getattr(resolved, name) for name in augment.PRESETS["none"]):
        log.info(f"feature cache: {phase_name} trains on centre crops without --augment={cfg.augment.preset}"
                 + ("" if fine_tune else " (--cache_augmented_views=K stores K augmented views too)"))
    elif views and (resolved.mixup_alpha or resolved.cutmix_alpha):
        log.info("feature cache: the stored views are not mixed (mixup/cutmix apply to phase 2 only)")
    if fine_tune:
        features, head, cut = fine_tune_models(model, cfg)
    else:
        features, head, cut = feature_model(model, cfg.model.pooling), head_model(model, cfg.model.pooling), ""
    digest = weights_digest(features)
    train_entry = ensure_entry(job, features, cfg.data.train_split, views, digest, cut)
    validation_entry = (ensure_entry(job, features, cfg.data.validation_split, 0, digest, cut)
                        if job.validation_steps else None)
    k = cfg.train.steps_per_execution
    dataset = strategy.distribute_datasets_from_function(
        lambda context: train_features(train_entry, cfg, context).batch(k, drop_remainder=True).prefetch(1))
    return CachedTask(head, iter(dataset), validation_entry and evaluator(job, head, validation_entry))


def evaluator(job: Job, head: keras.Model, validation_entry: Entry) -> Callable:
    """The validation evaluator of `head` (a model on cached inputs) over the entry's vectors."""
    cfg = job.cfg
    return evaluate_lib.make_evaluator(
        job.strategy, head, cfg, cfg.data.validation_split, len(job.class_names), job.validation_steps,
        make_dataset=lambda context: eval_features(validation_entry, cfg, context))
