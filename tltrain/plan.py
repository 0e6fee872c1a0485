"""The automatic plan: the training recipe derived from the data, for every setting the user did not give.

A fixed number of epochs is a handful of optimizer steps on a small data set and hours on a large one, and the
right image size depends on how big the source images are. So, when a setting is not given (on the command
line: the flag is absent; from Python: the field is not in `given`), the plan derives it from what
dataset.json and a sample of the records say: training images N, classes, images per class, the sources'
short side, and whether the backbone is pretrained. The rule (thresholds are properties of the data and the
backbone, not values fitted to one data set):

- image size: the sources' median short side rounded up to a multiple of 32, between 96 (3x3 cells in the
  final feature map of a stride-32 backbone: below it the pooled features degrade) and the backbone's own size
  (no detail to gain above the source, and pixels cost quadratically).
- batch: 32 below 10,000 images (many optimizer steps per epoch), 128 from there (fewer, cheaper steps), never
  more than half the training images.
- phase 1, the head on cached features (the frozen backbone's output per image is computed once: same model,
  seconds instead of minutes): 30 epochs' worth of steps, between 300 and 3,000. Head steps on stored vectors
  cost milliseconds, so small sets get hundreds of steps instead of a handful of epochs. Skipped from 20,000
  images, where one pass of the whole backbone over the data costs more than the head gains over starting
  phase 2 with a new head.
- phase 2, fine-tuning the backbone's top blocks: 3 * sqrt(20,000 / N) epochs, between 3 and 30 (small sets
  need more passes, large sets fewer), at least 100 steps. Below 20,000 images it trains the backbone's
  default cut through the images with flips and random crops (augmentation is what keeps a small set from
  being memorised), and validates on the stored activations below the cut; from 20,000 it trains the top
  third of the blocks (more data supports more trainable layers) on the stored activations below the cut
  (--cache_fine_tune: no augmentation, about 3x cheaper per step), where the data itself regularises.
- learning rates: Adam 1e-3 for the head; fine-tuning 1e-4 after a trained head, 3e-4 with a new head.
- head: one 512-unit hidden layer (on cached features it beat a linear head by 1-2.5 points at 5 to 100
  Fashion-MNIST images per class; the check below can still choose linear), dropout 0.2; label smoothing 0.1
  from 500 images per class, none below (at 5 and 20 images per class it cost the head 1-4 points: smoothed
  targets are a regulariser few examples cannot afford against the signal).
- crops: random crops no smaller than the output in source pixels and at least half the image; evaluation
  sees the whole image when the sources are smaller than the model's input (they are framed to the object).
- steps per epoch: an epoch is the unit of validation and checkpoints: the natural epoch, or longer so that
  phase 2 validates about 5 times (each validation of an uncached phase passes every validation image).
- patience 2: fine-tuning ends after 2 validations that do not beat its own best (it first falls below the
  head it starts from, then climbs); the best weights of the whole run are what is kept (tltrain.keep), and
  fine-tuning starts from the head's best.

Then the plan is checked on the data: a short search of the head's learning rate and hidden layer, trained
on the cached features of 80% of the training split and scored on the other 20% (never on the validation
split); a candidate replaces the rule's choice only when it is better by more than the held-out accuracy's
standard error, see `check`. A backbone trained from scratch (--weights=none) gets one phase of everything
with the phase 2 step rule. `--plan=none` turns all of this off (the fixed defaults of config.py), and giving any of
--epochs, --fine_tune_epochs or --steps_per_epoch keeps the fixed-epoch schedule (with the cache flags,
--freeze and --patience as given or defaulted).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import posixpath
import statistics

from tltrain import config, data, models, records, run_dir
from tltrain.config import RunConfig
from tltrain.dataset_metadata import DatasetMetadata

log = logging.getLogger(__name__)
LARGE = 20_000  # training images from which phase 2 runs on cached activations without a head phase
LARGE_CUT = "0.33"  # --fine_tune_at of a large set: the top third of the backbone's blocks
MANY_PER_CLASS = 500  # images per class from which the loss smooths its labels
SMALL_BATCH, LARGE_BATCH, LARGE_BATCH_FROM = 32, 128, 10_000
MIN_SIZE = 96  # 3 x 32: a 3x3 final feature map
HEAD_EPOCHS, HEAD_MIN_STEPS, HEAD_MAX_STEPS = 30, 300, 3_000
FINE_TUNE_MIN_STEPS = 100
FINE_TUNE_VALIDATIONS = 5
PATIENCE = 2  # validations without a better accuracy than the phase's best that end it (the best are kept)
SIZE_SAMPLE = 512  # training records whose height and width are read

# The settings the plan derives, by flag name. The schedule is one part: giving any of it keeps the old
# fixed-epoch behaviour for all of it.
SCHEDULE = ("epochs", "fine_tune_epochs", "steps_per_epoch")
PLANNED = SCHEDULE + ("patience", "image_size", "batch_size", "cache_features", "cache_fine_tune", "freeze",
                      "fine_tune_at", "learning_rate", "fine_tune_learning_rate", "head_units", "dropout",
                      "label_smoothing", "crop_area_range", "eval_crop_fraction")
# Settings that follow a given schedule too (the plan's values for them go with its own schedule).
_WITH_SCHEDULE = ("cache_features", "cache_fine_tune", "freeze", "fine_tune_at", "patience")
_SECTION = {"image_size": "data", "batch_size": "data", "crop_area_range": "data", "eval_crop_fraction": "data",
            "head_units": "model", "dropout": "model"}  # the others are TrainConfig fields


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the rule reads: counts from dataset.json, the sources' size from a sample of the records."""

    train_count: int
    num_classes: int
    per_class_min: int
    per_class_median: float
    source_side: int  # median short side of the sampled training images; 0: unknown (TFDS)
    pretrained: bool


def facts(cfg: RunConfig) -> DataFacts:
    info = data.dataset_info(cfg.data)
    counts = [c for c in info.class_counts[cfg.data.train_split]] or [0]
    return DataFacts(
        train_count=info.split_counts.get(cfg.data.train_split, 0), num_classes=info.num_classes,
        per_class_min=min(counts), per_class_median=statistics.median(counts),
        source_side=source_side(cfg), pretrained=cfg.model.weights != "none")


def source_side(cfg: RunConfig) -> int:
    """Median short side (pixels) of up to SIZE_SAMPLE training records, read from their height/width fields
    (no image is decoded); 0 for TFDS sources. Plain file reads and protobuf parsing, no TensorFlow op: a
    multi-worker strategy must configure TensorFlow's runtime before anything runs on it."""
    if not cfg.data.records_dir:
        return 0
    from tensorflow.core.example import example_pb2

    metadata = DatasetMetadata.read(cfg.data.records_dir)
    if cfg.data.train_split not in metadata.splits:
        return 0
    sides = []
    try:
        for path in metadata.shard_paths(cfg.data.train_split):
            with records.open_file(path) as raw:
                stream = gzip.GzipFile(fileobj=raw, mode="rb") if metadata.compression.upper() == "GZIP" else raw
                for serialized in records.read_records(stream, path):
                    feature = example_pb2.Example.FromString(serialized).features.feature
                    sides.append(min(feature["image/height"].int64_list.value[0],
                                     feature["image/width"].int64_list.value[0]))
                    if len(sides) >= SIZE_SAMPLE:
                        return int(statistics.median(sides))
    except records.DamagedRecords as error:
        raise ValueError(f"{error}; {metadata.rebuild_advice()}") from None
    return int(statistics.median(sides)) if sides else 0


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def derive(cfg: RunConfig, f: DataFacts, given: frozenset[str] = frozenset()) -> tuple[dict, list[str]]:
    """The rule: {flag name: value} for every planned setting, and one reason line per decision. A given
    --batch_size is the one the steps are counted in."""
    spec = models.REGISTRY[models.lookup(cfg.model.model)]
    n = max(f.train_count, 1)
    choice, why = {}, []
    why.append(f"data      {n} training images in {f.num_classes} classes ({f.per_class_min}-"
               f"{int(f.per_class_median)} per class)" + (f", sources {f.source_side} px on the short side"
                                                           if f.source_side else ""))
    floor = max(MIN_SIZE, spec.min_size)
    size = spec.default_size if not f.source_side else min(spec.default_size, max(floor, _round_up(f.source_side, 32)))
    choice["image_size"] = size
    why.append(f"image     {size} px: the sources' short side rounded up to 32, at least {floor}, at most "
               f"{cfg.model.model}'s {spec.default_size}")
    batch = SMALL_BATCH if n < LARGE_BATCH_FROM else LARGE_BATCH
    batch = max(8, min(batch, 2 ** int(math.log2(max(n // 2, 1)))))
    batch = cfg.data.batch_size if "batch_size" in given else batch
    choice["batch_size"] = batch
    natural = max(1, n // batch)

    ft_epochs = min(30.0, max(3.0, 3 * math.sqrt(LARGE / n)))
    ft_steps = max(FINE_TUNE_MIN_STEPS, math.ceil(ft_epochs * n / batch))
    large = n >= LARGE
    if not f.pretrained:
        spe = max(natural, math.ceil(ft_steps / FINE_TUNE_VALIDATIONS))
        choice.update(freeze="none", epochs=max(1, round(ft_steps / spe)), fine_tune_epochs=0, steps_per_epoch=spe,
                      cache_features=False, cache_fine_tune=False)
        why.append(f"batch     {batch}; {choice['epochs'] * spe} steps ({ft_epochs:.0f} epochs' worth) training the "
                   "whole network (no pretrained weights, or --freeze=none: nothing to freeze or cache)")
    else:
        spe = natural if large else max(natural, math.ceil(ft_steps / FINE_TUNE_VALIDATIONS))
        head_steps = 0 if large else min(HEAD_MAX_STEPS, max(HEAD_MIN_STEPS, HEAD_EPOCHS * natural))
        choice.update(freeze="backbone", steps_per_epoch=spe, epochs=math.ceil(head_steps / spe),
                      fine_tune_epochs=max(1, round(ft_steps / spe)), cache_features=True, cache_fine_tune=large)
        why.append(f"batch     {batch} ({'from' if large or n >= LARGE_BATCH_FROM else 'below'} "
                   f"{LARGE_BATCH_FROM:,} images); epochs of {spe} steps")
        if head_steps:
            why.append(f"phase 1   {choice['epochs'] * spe} head steps on cached features (the frozen backbone "
                       f"runs once per image; {HEAD_EPOCHS} epochs' worth, {HEAD_MIN_STEPS}-{HEAD_MAX_STEPS})")
        else:
            why.append(f"phase 1   none: from {LARGE:,} images the head starts with phase 2 (a whole-backbone "
                       "pass for the head alone would cost more than it gains)")
        choice["fine_tune_at"] = LARGE_CUT if large else ""
        cut = (f"the top third of the blocks (--fine_tune_at={LARGE_CUT})" if large else spec.fine_tune_at)
        how = ("on stored activations below the cut (no augmentation; the data is large enough)" if large else
               "through the images with flips and random crops, validated on stored activations below the cut")
        why.append(f"phase 2   {choice['fine_tune_epochs'] * spe} fine-tune steps from {cut} ({ft_epochs:.1f} "
                   f"epochs' worth: 3 x sqrt({LARGE:,} / N), 3-30) {how}"
                   + (f"; from {LARGE:,} images the data supports more trainable layers than {cfg.model.model}'s "
                      f"default cut {spec.fine_tune_at}" if large else ""))
        choice["patience"] = PATIENCE
        why.append(f"keep      the best validated weights; fine-tuning starts from the head's best and stops after "
                   f"{PATIENCE} validations that do not beat its own best")
        choice["learning_rate"] = 1e-3
        choice["fine_tune_learning_rate"] = 1e-4 if head_steps else 3e-4
        why.append(f"rates     Adam {choice['learning_rate']:g} for the head, {choice['fine_tune_learning_rate']:g} "
                   f"for fine-tuning ({'after a trained head' if head_steps else 'with a new head'}), cosine")
    many = f.per_class_median >= MANY_PER_CLASS
    choice.update(head_units=(512,), dropout=0.2, label_smoothing=0.1 if many else 0.0)
    why.append("head      512-unit hidden layer, dropout 0.2, label smoothing "
               + (f"0.1 (at least {MANY_PER_CLASS} images per class)" if many else
                  f"none (fewer than {MANY_PER_CLASS} images per class: smoothed targets cost a head on few "
                  "images 1-4 points)"))
    source = f.source_side or size
    min_area = min(0.5, max(0.08, (size / source) ** 2))
    choice["crop_area_range"] = (round(min_area, 3), 1.0)
    choice["eval_crop_fraction"] = 1.0 if source < size else cfg.data.eval_crop_fraction
    why.append(f"crops     training crops of {min_area:.0%}-100% of the image (no smaller than {size} source "
               f"pixels, at least half); evaluation sees "
               + ("the whole image (sources smaller than the input)" if source < size else
                  f"the central {choice['eval_crop_fraction']:.1%}"))
    return choice, why


def explicit_fields(cfg: RunConfig) -> set[str]:
    """For Python callers that do not say which settings they gave: those that differ from the defaults."""
    default = RunConfig()
    return {name for name, s in config.settings().items()
            if getattr(getattr(cfg, s.section), s.field.name) != getattr(getattr(default, s.section), s.field.name)}


def _with(cfg: RunConfig, values: dict) -> RunConfig:
    sections = {}
    for name, value in values.items():
        sections.setdefault(_SECTION.get(name, "train"), {})[name] = value
    return dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s), **v) for s, v in sections.items()})


def apply(cfg: RunConfig, given: set[str] | None = None) -> tuple[RunConfig, dict]:
    """(cfg with every planned setting not in `given` (flag names; None: explicit_fields(cfg)) taken from the
    plan, the plan's record: choices, reasons, check). A model_dir that already holds a planned run keeps that
    run's choices (a resumed run must be the same job). --plan=none: (cfg, {})."""
    if cfg.train.plan == "none":
        return cfg, {}
    given = explicit_fields(cfg) if given is None else set(given)
    saved = _saved_plan(cfg.train.model_dir)
    if saved:
        choice, why = saved["choices"], saved["reasons"]
        choice = {k: tuple(v) if isinstance(v, list) else v for k, v in choice.items()}
    else:
        data_facts = facts(cfg)
        if "freeze" in given and cfg.train.freeze == "none":
            data_facts = dataclasses.replace(data_facts, pretrained=False)
        choice, why = derive(cfg, data_facts, frozenset(given))
    notes = []  # how the given settings change the plan (the reasons are the rule's alone)
    if given & set(SCHEDULE):
        notes.append(f"kept      the fixed-epoch schedule of --{', --'.join(sorted(given & set(SCHEDULE)))}")
        given = given | set(SCHEDULE) | set(_WITH_SCHEDULE)
    applied = {k: v for k, v in choice.items() if k not in given}
    overridden = sorted(set(choice) & given - set(SCHEDULE) - set(_WITH_SCHEDULE))
    if overridden:
        notes.append(f"given     --{', --'.join(overridden)} (the plan's choice for those is not used)")
    if cfg.strategy.strategy == "multi_worker" and "cache_features" in applied:
        applied["cache_features"] = False  # one process builds a cache: every phase reads images instead
        notes.append("workers   --strategy=multi_worker: no feature cache (one process builds it)")
    if not applied.get("cache_features", cfg.train.cache_features):
        applied["cache_fine_tune"] = False
    record = {"choices": choice, "applied": sorted(applied), "reasons": why, "notes": notes,
              "check": saved.get("check", {})}
    return _with(cfg, applied), record


def _saved_plan(model_dir: str) -> dict:
    """The plan record of the run in model_dir ({}: none); a corrupt config.json is read_config's one line."""
    path = posixpath.join(model_dir, run_dir.CONFIG_FILE)
    if not model_dir or run_dir.read_config(path) is None:
        return {}
    return json.loads(run_dir.read_text(path)).get("plan", {})


def describe(record: dict) -> str:
    """The plan as one block for the console."""
    if not record:
        return "plan: none (--plan=none: the fixed defaults and the given flags)"
    lines = ["plan (automatic; every flag you give overrides its part, --plan=none turns it off):"]
    lines += [f"  {line}" for line in record["reasons"] + record.get("notes", [])]
    for line in record.get("check", {}).get("lines", []):
        lines.append(f"  checked   {line}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- check

HELD_OUT_EVERY = 5  # every 5th training example of each class is held out: 20%
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
HEADS = ((), (512,))
CHECK_SAMPLE = 4_000  # training images whose features a plan without a head phase computes for the check
SEARCH_STEPS = 300  # steps of each candidate head: a short search, the ranking is what counts


def check(job):
    """The plan's head checked on the data: a short search over the head's learning rate and hidden layer (the
    planned ones not given), each candidate trained on the frozen features of 80% of the training split for
    SEARCH_STEPS steps (phase 1's steps when fewer) and scored on the other 20%; the best (accuracy, then
    loss) replaces the plan's when its accuracy is higher by more than the standard error of the plan's on
    that many held-out images (on a few dozen, the ranking is noise: the rule stands). The training split's
    features come from the feature cache phase 1 trains on (built here, reused there), or, without a head
    phase, from the first CHECK_SAMPLE images. Returns the job with the chosen values;
    a job with nothing to search (or resuming a checked plan) is returned as it is."""
    import tensorflow as tf

    from tltrain import features, train

    cfg = job.cfg
    record = job.plan
    searched = [k for k in ("learning_rate", "head_units") if k in record.get("applied", ())]
    if cfg.train.epochs <= 0:
        searched = [k for k in searched if k != "learning_rate"]  # no head phase uses it
    if (not record or record.get("check") or not searched or not cfg.train.cache_features
            or cfg.train.freeze != "backbone" or tf.train.latest_checkpoint(
                posixpath.join(cfg.train.model_dir, run_dir.CHECKPOINT_DIR))):
        return job
    vectors, labels = _train_features(job, features)
    train_rows, held_rows = _hold_out(labels)
    if len(held_rows) < job.cfg.train.num_classes or not len(train_rows):
        return job
    steps = min(SEARCH_STEPS, cfg.train.epochs * job.steps_per_epoch or SEARCH_STEPS)
    rates = LEARNING_RATES if "learning_rate" in searched else (cfg.train.learning_rate,)
    heads = HEADS if "head_units" in searched else (cfg.model.head_units,)
    candidates = [(rate, head) for head in heads for rate in rates]
    scores = _score_heads(cfg, vectors, labels, train_rows, held_rows, candidates, steps)
    results = [(accuracy, -loss, rate, head) for (accuracy, loss), (rate, head) in zip(scores, candidates)]
    rule = (cfg.train.learning_rate, cfg.model.head_units)
    (accuracy, _, rate, head), noise = choose(results, rule, len(held_rows))
    planned = (rate, head) == rule
    lines = [f"{len(train_rows)} training images' features, {len(held_rows)} held out, {steps} steps each: "
             + ", ".join(f"{_head_name(h)} lr {r:g} {a:.3f}" for a, _, r, h in results),
             f"chosen: {_head_name(head)} head, lr {rate:g} (held-out accuracy {accuracy:.3f}; "
             + ("the plan's: no other is better by more than" if planned else "better than the plan's by more than")
             + f" the standard error {noise:.3f})"]
    for line in lines:
        log.info(f"plan: checked {line}")
    values = {k: {"learning_rate": rate, "head_units": head}[k] for k in searched}
    new_cfg = _with(cfg, values)
    return dataclasses.replace(job, cfg=new_cfg, plan={**record, "check": {"lines": lines, **values}},
                               phases=train.plan_phases(new_cfg, job.strategy.num_replicas_in_sync))


def choose(results: list[tuple], planned: tuple, held_out: int) -> tuple[tuple, float]:
    """(the chosen (accuracy, -loss, rate, head) of `results`, the standard error of the planned one's accuracy
    on `held_out` images). The best (accuracy, then loss) replaces the planned (rate, head) only when its
    accuracy is higher by more than that standard error."""
    best = max(results, key=lambda r: r[:2])
    mine = next(r for r in results if tuple(r[2:]) == tuple(planned))
    noise = math.sqrt(mine[0] * (1 - mine[0]) / held_out)
    return (best if best[0] - mine[0] > noise else mine), noise


def _head_name(head: tuple[int, ...]) -> str:
    return ",".join(map(str, head)) + "-unit" if head else "linear"


def _train_features(job, features):
    """(float32 [n, dim], int [n]) frozen pooled features of the training split (or its first CHECK_SAMPLE)."""
    import numpy as np
    import tensorflow as tf

    cfg = job.cfg
    with job.strategy.scope():
        model = run_dir.build_model(cfg, cfg.train.num_classes, job.precision)
    feature_model = features.feature_model(model, cfg.model.pooling)
    if cfg.train.epochs > 0 and not cfg.train.cache_augmented_views:
        entry = features.ensure_entry(job, feature_model, cfg.data.train_split, 0,
                                      features.weights_digest(feature_model))
        batches = features.eval_features(entry, cfg)
    else:
        # The backbone runs in this thread's compiled function, not inside the dataset's map, where TensorFlow
        # gave it about one core (3.9-4.2 ms an image against 2.7 at 96 px on two cores).
        extract = tf.function(lambda images: tf.cast(feature_model(images, training=False), tf.float32))
        batches = ((extract(images), labels) for images, labels in data.make_eval_dataset(
            cfg.data, cfg.data.image_size, cfg.data.train_split).take(math.ceil(CHECK_SAMPLE / cfg.data.batch_size)))
    vectors, labels = [], []
    for batch_vectors, batch_labels in batches:
        keep = batch_labels.numpy() >= 0
        vectors.append(batch_vectors.numpy()[keep])
        labels.append(batch_labels.numpy()[keep])
    return np.concatenate(vectors), np.concatenate(labels)


def _hold_out(labels):
    """Row indices (train, held out): every HELD_OUT_EVERY-th example of each class, from its second on."""
    import numpy as np

    held = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        held[rows[1::HELD_OUT_EVERY]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _score_heads(cfg: RunConfig, vectors, labels, train_rows, held_rows, candidates, steps) -> list[tuple]:
    """Held-out (accuracy, loss) of each (learning rate, hidden units) candidate head trained on the features
    as phase 1 would train it: the classifier's head layers, Adam with a cosine decay, label smoothing, L2 with
    --l2. All candidates train in one compiled loop on the same batches, each with its own layers and optimizer
    (six Keras fits, one per candidate, took 12.8 s on 800 images' features; this loop 7 s)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.train.seed)
    num_classes = cfg.train.num_classes
    heads, optimizers = [], []
    for rate, hidden in candidates:
        head_cfg = dataclasses.replace(cfg.model, head_units=hidden)
        heads.append(keras.Sequential([keras.Input((vectors.shape[1],)), *models.head_layers(head_cfg, num_classes)]))
        optimizers.append(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(rate, steps)))
        optimizers[-1].build(heads[-1].trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing)
    one_hot = tf.one_hot(labels, num_classes).numpy()
    batch = min(cfg.data.batch_size, len(train_rows))
    dataset = (tf.data.Dataset.from_tensor_slices((vectors[train_rows], one_hot[train_rows]))
               .shuffle(len(train_rows), seed=cfg.train.seed).repeat().batch(batch, drop_remainder=True).take(steps))

    @tf.function
    def train(dataset):
        for features, targets in dataset:
            with tf.GradientTape() as tape:
                loss = tf.add_n([loss_fn(targets, head(features, training=True)) + sum(head.losses) for head in heads])
            gradients = tape.gradient(loss, [head.trainable_variables for head in heads])
            for optimizer, head, head_gradients in zip(optimizers, heads, gradients):
                optimizer.apply(head_gradients, head.trainable_variables)

    train(dataset)
    held_features, held_targets = tf.constant(vectors[held_rows]), tf.constant(one_hot[held_rows])
    scores = []
    for head in heads:
        probabilities = head(held_features, training=False)
        accuracy = keras.metrics.categorical_accuracy(held_targets, probabilities)
        scores.append((float(tf.reduce_mean(accuracy)), float(loss_fn(held_targets, probabilities))))
    return scores


def prepare(cfg: RunConfig, given: set[str] | None = None, checked: bool = True):
    """The job a user's settings describe: the plan applied (see `apply`) and logged, validated (train.prepare),
    and with `checked`, checked on the data (see `check`; the command line does that after its validation)."""
    from tltrain import train

    cfg, record = apply(cfg, given)
    log.info(describe(record))
    job = dataclasses.replace(train.prepare(cfg), plan=record)
    return check(job) if checked else job
