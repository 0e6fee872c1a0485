"""The training job: both phases in one custom loop for every strategy, checkpoints with automatic resume,
TensorBoard summaries and the per-epoch console line.

Why a custom loop: Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
while `strategy.run` over `distribute_datasets_from_function` works for every strategy. Each call of the
compiled train function runs `steps_per_execution` steps on a stack of that many per-replica batches that
Python fetched with one `next()`: timing that `next()` gives the input-wait share (the input-bound signal),
and the in-graph `tf.range` loop keeps the graph one step long.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import time

import keras
import numpy as np
import tensorflow as tf

from tltrain import augment, checkpoints, data, data_service, features, model_dir_lock, models, run_dir
from tltrain import evaluate as evaluate_lib
from tltrain import strategy as strategy_lib
from tltrain.config import RunConfig

SUM = tf.distribute.ReduceOp.SUM


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str  # transfer | fine_tune | full: the models.set_phase argument
    epochs: int
    learning_rate: float


@dataclasses.dataclass
class Job:
    """A validated training run: everything resolved before any model is built."""

    cfg: RunConfig  # with image_size and num_classes resolved
    strategy: tf.distribute.Strategy
    class_names: list[str]
    class_counts: list[int]  # training examples per class
    steps_per_epoch: int
    validation_steps: int  # 0: no validation split
    phases: list[Phase]
    precision: str  # keras dtype policy name


# ---------------------------------------------------------------------------------------------- validation


def prepare(cfg: RunConfig) -> Job:
    """Checks every setting against the records, the model registry, an earlier run in model_dir and the
    devices, before anything is built (the strategy last: multi-worker and TPU strategies wait for their
    cluster). Raises ValueError/FileNotFoundError with a one-line message."""
    strategy_lib.configure_cpu_devices(cfg.strategy.num_cpu_devices)
    t = cfg.train
    run_dir.check_directory("model_dir", t.model_dir)
    image_size = models.validate(cfg.model, cfg.data.image_size)
    info = data.dataset_info(cfg.data)  # a missing dataset.json is a FileNotFoundError naming it
    train_count = info.split_counts.get(cfg.data.train_split, 0)
    validation_count = info.split_counts.get(cfg.data.validation_split, 0)
    if train_count == 0:
        raise ValueError(f"--records_dir={cfg.data.records_dir}: no examples in split '{cfg.data.train_split}'")
    if t.num_classes and t.num_classes != info.num_classes:
        raise ValueError(f"--num_classes={t.num_classes}: the records have {info.num_classes} classes")
    if cfg.data.batch_size < 1:
        raise ValueError(f"--batch_size={cfg.data.batch_size}: must be >= 1")
    if t.steps_per_execution < 1:
        raise ValueError(f"--steps_per_execution={t.steps_per_execution}: must be >= 1")
    if t.epochs <= 0 and t.fine_tune_epochs <= 0:
        raise ValueError("--epochs, --fine_tune_epochs: nothing to train (both are 0)")
    if t.freeze == "none" and t.fine_tune_epochs:
        raise ValueError("--fine_tune_epochs: needs --freeze=backbone (with --freeze=none everything trains from the start)")
    if t.stop_at_accuracy and not validation_count:
        raise ValueError(f"--stop_at_accuracy: the records have no '{cfg.data.validation_split}' split to measure it on")
    if t.profile_steps and not 0 <= t.profile_steps[0] < t.profile_steps[1]:
        raise ValueError(f"--profile_steps={','.join(map(str, t.profile_steps))}: needs A,B with 0 <= A < B")
    remote_tpu = cfg.strategy.strategy == "tpu" and cfg.strategy.tpu not in ("", "local")
    for flag, path in (("records_dir", cfg.data.records_dir), ("model_dir", t.model_dir)):
        if remote_tpu and path and not path.startswith("gs://"):
            raise ValueError(f"--{flag}={path}: the TPU {cfg.strategy.tpu} cannot read local files; use a gs:// path")
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, image_size=image_size),
        train=dataclasses.replace(t, num_classes=info.num_classes),
    )
    run_dir.check_resume_compatible(cfg, list(info.class_names))
    features.validate(cfg)
    data_service.probe(cfg.data)
    _check_resumable_with(t.steps_per_execution, t.model_dir)
    if t.fine_tune_at and t.fine_tune_epochs and t.freeze == "backbone":
        _check_fine_tune_at(cfg)

    strategy = strategy_lib.make_strategy(cfg.strategy)
    replicas = strategy.num_replicas_in_sync
    if cfg.data.batch_size % replicas:
        raise ValueError(f"--batch_size={cfg.data.batch_size}: not divisible by the {replicas} replicas")
    k = t.steps_per_execution
    steps = t.steps_per_epoch or max(1, train_count // cfg.data.batch_size)
    validation_steps = data.eval_steps(cfg.data, cfg.data.validation_split) if validation_count else 0
    if t.validation_steps:
        validation_steps = min(validation_steps, t.validation_steps)
    return Job(
        cfg=cfg,
        strategy=strategy,
        class_names=list(info.class_names),
        class_counts=list(info.class_counts[cfg.data.train_split]),
        steps_per_epoch=math.ceil(steps / k) * k,  # whole executions
        validation_steps=validation_steps,
        phases=plan_phases(cfg, replicas),
        precision=resolve_precision(t.mixed_precision, strategy),
    )


def _check_resumable_with(steps_per_execution: int, model_dir: str) -> None:
    """An execution stacks steps_per_execution batches, so a resumed phase must be at a multiple of it."""
    for latest in checkpoints.newest_first(posixpath.join(model_dir, run_dir.CHECKPOINT_DIR)):
        try:  # the one a resume restores: the newest that reads
            phase_step = int(tf.train.load_checkpoint(latest).get_tensor("phase_step/.ATTRIBUTES/VARIABLE_VALUE"))
            break
        except (tf.errors.OpError, IndexError):
            continue
    else:
        return
    if phase_step % steps_per_execution:
        raise ValueError(f"--steps_per_execution={steps_per_execution}: {latest} is at step {phase_step} of its "
                         "phase, not a multiple of it; resume with the --steps_per_execution it was written with")


def _check_fine_tune_at(cfg: RunConfig) -> None:
    """--fine_tune_at names a layer or block of the backbone: checked on a weightless copy of it (seconds), so a
    typo fails now rather than after phase 1."""
    probe = run_dir.build_model(cfg, cfg.train.num_classes, "float32", weights="none")
    models.fine_tune_start(probe.get_layer("backbone"), cfg.model, cfg.train.fine_tune_at)


def plan_phases(cfg: RunConfig, replicas: int) -> list[Phase]:
    """Phase 1 transfer (or `full` with --freeze=none), phase 2 fine_tune; phases without epochs are left out."""
    t = cfg.train
    lr = t.learning_rate * (replicas if t.scale_learning_rate == "linear" else 1)
    fine_tune_lr = t.fine_tune_learning_rate * (replicas if t.scale_learning_rate == "linear" else 1) or lr / 10
    if t.freeze == "none":
        planned = [Phase("full", t.epochs, lr)]
    else:
        planned = [Phase("transfer", t.epochs, lr), Phase("fine_tune", t.fine_tune_epochs, fine_tune_lr)]
    return [p for p in planned if p.epochs > 0]


def resolve_precision(mode: str, strategy: tf.distribute.Strategy) -> str:
    """auto: float16 on GPUs with compute capability >= 7, bfloat16 on TPU, float32 on CPUs without native
    bf16 (there mixed_bfloat16 was measured 1.5-3.5x slower)."""
    if mode == "float16":
        return "mixed_float16"
    if mode == "bfloat16":
        return "mixed_bfloat16"
    if mode == "none":
        return "float32"
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_float16" if capability >= (7, 0) else "float32"
    return "mixed_bfloat16" if _cpu_has_native_bf16() else "float32"


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def make_optimizer(name: str, schedule: keras.optimizers.schedules.LearningRateSchedule, precision: str):
    """adam | sgd (momentum 0.9) | rmsprop; wrapped in a LossScaleOptimizer under float16."""
    if name == "adam":
        optimizer = keras.optimizers.Adam(schedule)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    elif name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(schedule)
    else:
        raise ValueError(f"--optimizer={name}: unknown; choose adam, sgd or rmsprop")
    return keras.optimizers.LossScaleOptimizer(optimizer) if precision == "mixed_float16" else optimizer


@keras.saving.register_keras_serializable(package="tltrain")
class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine decay to 0, steps of x0.1 at 50% and 75%, or constant; over one phase,
    driven by that phase's optimizer.iterations (so a resumed run continues at the same learning rate)."""

    def __init__(self, learning_rate: float, total_steps: int, warmup_steps: int, kind: str):
        self.learning_rate = learning_rate
        self.total_steps = total_steps
        self.warmup_steps = min(warmup_steps, total_steps)
        self.kind = kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        base = tf.constant(self.learning_rate, tf.float32)
        warmup = float(max(self.warmup_steps, 1))
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        if self.kind == "cosine":
            decayed = 0.5 * base * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "step":
            decayed = base * tf.pow(0.1, tf.cast(progress >= 0.5, tf.float32) + tf.cast(progress >= 0.75, tf.float32))
        else:
            decayed = base
        return tf.where(step < self.warmup_steps, base * (step + 1.0) / warmup, decayed)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "kind": self.kind}


# ------------------------------------------------------------------------------------------------- steps


def make_train_function(job: Job, model: keras.Model, optimizer, augmenter, class_weights: tf.Tensor | None):
    """A tf.function running steps_per_execution steps of the current phase; returns the summed
    [loss, correct, top-k correct, examples] over those steps, reduced across replicas and workers.

    The augmenter runs on the device, in the replica step, seeded by [seed, step * replicas + replica]."""
    strategy = job.strategy
    t = job.cfg.train
    num_classes = len(job.class_names)
    global_batch = job.cfg.data.batch_size
    replicas = strategy.num_replicas_in_sync
    top_k = min(5, num_classes)
    variables = model.trainable_variables

    def replica_step(batch, index, first_step):
        images, labels = batch[0][index], batch[1][index]
        replica_id = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        seed = tf.stack([tf.constant(t.seed, tf.int64), (first_step + tf.cast(index, tf.int64)) * replicas + replica_id])
        images, soft_labels = augmenter(images, tf.one_hot(labels, num_classes), seed)
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_example = evaluate_lib.per_example_loss(soft_labels, probabilities, t.label_smoothing)
            if class_weights is not None:
                per_example *= tf.reduce_sum(soft_labels * class_weights, axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n([tf.cast(x, tf.float32) for x in model.losses]))
            scaled_loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        top1, topk = evaluate_lib.hits(tf.argmax(soft_labels, -1, output_type=tf.int32), probabilities, top_k)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([loss, tf.reduce_sum(top1), tf.reduce_sum(topk), count])

    @tf.function
    def train_steps(batch, first_step):
        totals = tf.zeros([4])
        for index in tf.range(t.steps_per_execution):
            per_replica = strategy.run(replica_step, args=(batch, index, first_step))
            totals += strategy.reduce(SUM, per_replica, axis=None)
        return totals

    return train_steps


# -------------------------------------------------------------------------------------------------- loop


class _Meter:
    """Sums over a window of executions (an epoch, or a --log_steps window of training summaries)."""

    def __init__(self):
        self.totals = np.zeros(4)  # loss (per step), correct, top-5 correct, examples
        self.steps = 0
        self.seconds = 0.0
        self.input_wait = 0.0

    def add(self, totals: np.ndarray, steps: int, seconds: float, input_wait: float) -> None:
        self.totals += totals
        self.steps += steps
        self.seconds += seconds
        self.input_wait += input_wait

    def metrics(self, global_batch: int) -> dict:
        examples = max(self.totals[3], 1.0)
        seconds = max(self.seconds, 1e-9)
        return {
            "loss": self.totals[0] / max(self.steps, 1),
            "accuracy": self.totals[1] / examples,
            "top5_accuracy": self.totals[2] / examples,
            "images_per_second": self.steps * global_batch / seconds,
            "step_time_ms": 1000 * seconds / max(self.steps, 1),
            "input_wait_share": self.input_wait / seconds,
        }


def _class_weights(job: Job) -> tf.Tensor | None:
    """--class_weight=balanced: total / (classes * count) per class, from the records' training counts."""
    if job.cfg.train.class_weight != "balanced":
        return None
    counts = np.asarray(job.class_counts, dtype=np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
    return tf.constant(weights, tf.float32)


def _hparams(job: Job) -> dict:
    cfg = job.cfg
    return {
        "model": cfg.model.model, "weights": cfg.model.weights, "alpha": cfg.model.alpha,
        "image_size": cfg.data.image_size, "batch_size": cfg.data.batch_size, "augment": cfg.augment.preset,
        "optimizer": cfg.train.optimizer, "learning_rate": cfg.train.learning_rate,
        "fine_tune_learning_rate": job.phases[-1].learning_rate, "epochs": cfg.train.epochs,
        "fine_tune_epochs": cfg.train.fine_tune_epochs, "fine_tune_at": cfg.train.fine_tune_at,
        "schedule": cfg.train.schedule, "label_smoothing": cfg.train.label_smoothing,
        "dropout": cfg.model.dropout, "precision": job.precision, "strategy": cfg.strategy.strategy,
        "replicas": job.strategy.num_replicas_in_sync,
    }


def _console_line(phase: Phase, epoch: int, step: int, seconds: float, train: dict, validation, lr: float) -> str:
    """One Keras-like line per epoch."""
    parts = [f"[{phase.name}] epoch {epoch}/{phase.epochs} (step {step}) {seconds:.1f}s",
             f"loss {train['loss']:.4f}", f"accuracy {train['accuracy']:.4f}", f"top5 {train['top5_accuracy']:.4f}"]
    if validation is not None:
        parts += [f"val_loss {validation.loss:.4f}", f"val_accuracy {validation.accuracy:.4f}",
                  f"val_top5 {validation.top5_accuracy:.4f}"]
    parts += [f"lr {lr:.2e}", f"{train['images_per_second']:.1f} img/s", f"{train['step_time_ms']:.0f} ms/step",
              f"input wait {100 * train['input_wait_share']:.1f}%"]
    return " - ".join(parts)


class _Progress:
    """Where the run is (global step, phase, step within the phase, stopped early), with the model and every
    phase's optimizer in one checkpoint. Restored from model_dir when there is a checkpoint."""

    def __init__(self, job: Job, model: keras.Model, optimizers: dict):
        with job.strategy.scope():
            self.variables = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                              for name in ("step", "phase", "phase_step", "stopped_early")}
        checkpoint = tf.train.Checkpoint(model=model, **{f"optimizer_{n}": o for n, o in optimizers.items()},
                                         **self.variables)
        self.directory = posixpath.join(job.cfg.train.model_dir, run_dir.CHECKPOINT_DIR)
        self.write_directory = strategy_lib.write_dir(self.directory)  # a temporary one on non-chief workers
        self.manager = tf.train.CheckpointManager(checkpoint, self.write_directory, max_to_keep=3)
        latest = checkpoints.restore_newest(checkpoint, self.directory)
        if latest:
            print(f"resumed from {latest}", flush=True)
        self.step, self.phase, self.phase_step, stopped = (int(v.numpy()) for v in self.variables.values())
        self.stopped_early = bool(stopped)

    def advance(self, steps: int) -> None:
        self.step += steps
        self.phase_step += steps

    def enter(self, phase: int) -> None:
        if phase != self.phase:
            self.phase, self.phase_step = phase, 0

    def save(self) -> None:
        for name, value in (("step", self.step), ("phase", self.phase), ("phase_step", self.phase_step),
                            ("stopped_early", int(self.stopped_early))):
            self.variables[name].assign(value)
        checkpoints.save(self.manager, self.step)

    def close(self) -> None:
        strategy_lib.cleanup_write_dir(self.directory, self.write_directory)


def _build(job: Job) -> tuple[keras.Model, object, dict]:
    """Model, augmenter and one optimizer per phase, in the strategy scope. The optimizers are built up front
    (each over its phase's trainable variables) so a checkpoint restores every phase's slots."""
    cfg, spe = job.cfg, job.steps_per_epoch
    keras.utils.set_random_seed(cfg.train.seed)
    with job.strategy.scope():
        model = run_dir.build_model(cfg, len(job.class_names), job.precision)
        augmenter = augment.Augmenter(cfg.augment, len(job.class_names))
        optimizers = {}
        for phase in job.phases:
            schedule = PhaseSchedule(phase.learning_rate, phase.epochs * spe,
                                     round(cfg.train.warmup_epochs * spe), cfg.train.schedule)
            optimizers[phase.name] = make_optimizer(cfg.train.optimizer, schedule, job.precision)
            models.set_phase(model, phase.name, cfg.model, cfg.train.fine_tune_at, cfg.train.fine_tune_batchnorm)
            optimizers[phase.name].build(model.trainable_variables)
    return model, augmenter, optimizers


class _Summaries:
    """TensorBoard writers: model_dir/train, model_dir/validation, hparams in model_dir; no-ops off the chief."""

    def __init__(self, job: Job, fresh: bool):
        self.chief = strategy_lib.is_chief()
        model_dir = job.cfg.train.model_dir
        if not self.chief:
            self.train = self.validation = tf.summary.create_noop_writer()
            return
        self.train = tf.summary.create_file_writer(posixpath.join(model_dir, "train"))
        self.validation = tf.summary.create_file_writer(posixpath.join(model_dir, "validation"))
        if fresh:
            from tensorboard.plugins.hparams import api as hparams_api

            with tf.summary.create_file_writer(model_dir).as_default():
                hparams_api.hparams(_hparams(job))

    def training(self, metrics: dict, learning_rate: float, step: int) -> None:
        with self.train.as_default():
            for name, value in metrics.items():
                tf.summary.scalar(name, value, step=step)
            tf.summary.scalar("learning_rate", learning_rate, step=step)

    def evaluation(self, result, class_names: list[str], step: int) -> None:
        if not self.chief:
            return
        with self.validation.as_default():
            for name in ("loss", "accuracy", "top5_accuracy"):
                tf.summary.scalar(name, getattr(result, name), step=step)
            evaluate_lib.confusion_summary(result.confusion, class_names, step)

    def augmented_grid(self, images: tf.Tensor, step: int) -> None:
        if self.chief:
            with self.train.as_default():
                tf.summary.image("augmented_inputs", augment.grid_image(images), step=step)

    def close(self) -> None:
        for writer in (self.train, self.validation):
            writer.flush()


class _Profiler:
    """--profile_steps=A,B: a profiler trace of global steps [A, B) in model_dir/train (chief only)."""

    def __init__(self, job: Job):
        self.start, self.stop = job.cfg.train.profile_steps or (-1, -1)
        self.logdir = posixpath.join(job.cfg.train.model_dir, "train")
        self.enabled = strategy_lib.is_chief()
        self.running = False

    def before(self, step: int) -> None:
        if self.enabled and not self.running and self.start <= step < self.stop:
            tf.profiler.experimental.start(self.logdir)
            self.running = True

    def after(self, step: int) -> None:
        if self.running and step >= self.stop:
            self.end()

    def end(self) -> None:
        if self.running:
            tf.profiler.experimental.stop()
            self.running = False


def _crossed(step: int, steps: int, every: int) -> bool:
    """Whether the last `steps` steps up to `step` crossed a multiple of `every` (0: never)."""
    return bool(every) and step // every != (step - steps) // every


def train(job: Job) -> dict:
    """Runs (or resumes) both phases. Returns {"step", "stopped_early", "history": [one dict per epoch]}.
    The chief holds model_dir's lock meanwhile: a second run on it is a one-line model_dir_lock.ModelDirInUse."""
    if not strategy_lib.is_chief():
        return _train(job)
    with model_dir_lock.exclusive(job.cfg.train.model_dir):
        return _train(job)


def _train(job: Job) -> dict:
    started_at, out_of_time = time.perf_counter(), False  # --max_seconds
    cfg, strategy = job.cfg, job.strategy
    k, spe, global_batch = cfg.train.steps_per_execution, job.steps_per_epoch, cfg.data.batch_size
    if strategy_lib.is_chief():
        run_dir.write_run_files(cfg.train.model_dir, cfg, job.class_names)
    replicas = strategy.num_replicas_in_sync
    print(f"{type(strategy).__name__}, {replicas} replicas, {job.precision}, global batch {global_batch} "
          f"({global_batch // replicas} per replica), {spe} steps per epoch, {job.validation_steps} validation steps",
          flush=True)
    model, augmenter, optimizers = _build(job)
    progress = _Progress(job, model, optimizers)
    history: list[dict] = []
    result = {"step": progress.step, "stopped_early": progress.stopped_early, "history": history}
    remaining = [i for i, p in enumerate(job.phases) if i > progress.phase or
                 (i == progress.phase and progress.phase_step < p.epochs * spe)]
    if progress.stopped_early or not remaining:
        reason = "stopped early (--stop_at_accuracy)" if progress.stopped_early else "complete"
        print(f"run already {reason} at step {progress.step}", flush=True)
        progress.close()
        return result

    summaries = _Summaries(job, fresh=progress.step == 0)
    profiler = _Profiler(job)
    dataset = strategy.distribute_datasets_from_function(
        lambda context: data.make_train_dataset(cfg.data, cfg.data.image_size, context)
        .batch(k, drop_remainder=True).prefetch(1)  # one next() = one execution's stack of k batches
    )
    iterator = None  # started by the first phase that reads images: a feature cache build needs the cores
    evaluator = (evaluate_lib.make_evaluator(strategy, model, cfg, cfg.data.validation_split,
                                             len(job.class_names), job.validation_steps)
                 if job.validation_steps else None)
    class_weights = _class_weights(job)

    for index in remaining:
        phase = job.phases[index]
        progress.enter(index)
        total = phase.epochs * spe
        trainable = models.set_phase(model, phase.name, cfg.model, cfg.train.fine_tune_at,
                                     cfg.train.fine_tune_batchnorm)
        print(f"[{phase.name}] {trainable} trainable backbone layers, {len(model.trainable_variables)} trainable "
              f"variables, learning rate {phase.learning_rate:g}, {phase.epochs} epochs of {spe} steps", flush=True)
        optimizer = optimizers[phase.name]
        cached = features.cached_phase(job, model, phase.name) if features.applies(cfg, phase.name) else None
        if cached is None and iterator is None:
            iterator = data_service.watched(dataset, cfg.data)
        phase_iterator, phase_evaluator = (cached.iterator, cached.evaluator) if cached else (iterator, evaluator)
        train_steps = make_train_function(job, cached.head if cached else model, optimizer,
                                          features.no_augmentation if cached else augmenter, class_weights)
        grid_pending = cached is None
        while progress.phase_step < total and not progress.stopped_early and not out_of_time:
            epoch_end = (progress.phase_step // spe + 1) * spe
            epoch_meter, window_meter = _Meter(), _Meter()
            while progress.phase_step < epoch_end:
                profiler.before(progress.step)
                started = time.perf_counter()
                batch = next(phase_iterator)
                fetched = time.perf_counter()
                if grid_pending:
                    summaries.augmented_grid(_augmented_sample(job, augmenter, batch, progress.step), progress.step)
                    grid_pending = False
                totals = train_steps(batch, tf.constant(progress.step, tf.int64)).numpy()
                finished = time.perf_counter()
                progress.advance(k)
                for meter in (epoch_meter, window_meter):
                    meter.add(totals, k, finished - started, fetched - started)
                profiler.after(progress.step)
                mid_epoch = progress.phase_step < epoch_end
                if mid_epoch and _crossed(progress.step, k, cfg.train.log_steps):
                    summaries.training(window_meter.metrics(global_batch), _learning_rate(optimizer), progress.step)
                    window_meter = _Meter()
                if mid_epoch and _crossed(progress.step, k, cfg.train.checkpoint_steps):
                    progress.save()
                if cfg.train.max_seconds and time.perf_counter() - started_at >= cfg.train.max_seconds:
                    out_of_time = True
                    print(f"--max_seconds={cfg.train.max_seconds:g}: stopping at step {progress.step}", flush=True)
                    break
            summaries.training(window_meter.metrics(global_batch), _learning_rate(optimizer), progress.step)
            validation = phase_evaluator() if phase_evaluator else None
            if validation is not None:
                summaries.evaluation(validation, job.class_names, progress.step)
            train_metrics = epoch_meter.metrics(global_batch)
            epoch = progress.phase_step // spe
            print(_console_line(phase, epoch, progress.step, epoch_meter.seconds, train_metrics, validation,
                                _learning_rate(optimizer)), flush=True)
            record = {"phase": phase.name, "epoch": epoch, "step": progress.step, **train_metrics}
            if validation is not None:
                record.update({f"val_{n}": getattr(validation, n) for n in ("loss", "accuracy", "top5_accuracy")})
                target = cfg.train.stop_at_accuracy
                if target and validation.accuracy >= target:
                    progress.stopped_early = True
                    print(f"validation accuracy {validation.accuracy:.4f} >= --stop_at_accuracy={target}: stopping",
                          flush=True)
            history.append(record)
            progress.save()
        if progress.stopped_early or out_of_time:
            break
    profiler.end()
    summaries.close()
    progress.close()
    result.update(step=progress.step, stopped_early=progress.stopped_early)
    if strategy_lib.is_chief():
        print(f"done at step {progress.step}; TensorBoard: tensorboard --logdir {cfg.train.model_dir}", flush=True)
    return result


def _learning_rate(optimizer) -> float:
    return float(optimizer.learning_rate)


def _augmented_sample(job: Job, augmenter, batch, step: int) -> tf.Tensor:
    """The first replica's inputs of this execution's first step, augmented as the replica step does."""
    images = job.strategy.experimental_local_results(batch[0])[0][0][:16]
    labels = job.strategy.experimental_local_results(batch[1])[0][0][:16]
    seed = tf.constant([job.cfg.train.seed, step * job.strategy.num_replicas_in_sync], tf.int64)
    augmented, _ = augmenter(images, tf.one_hot(labels, len(job.class_names)), seed)
    return augmented
