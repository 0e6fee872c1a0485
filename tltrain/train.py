"""The training job: every planned phase in one custom loop for every strategy, checkpoints with automatic
resume, and what the run reports (tltrain.reporting) after every execution, epoch and evaluation.

Why a custom loop: Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
while `strategy.run` over `distribute_datasets_from_function` works for every strategy. A phase's inputs,
model, augmentation and evaluation come from its phases.PhaseTask (images, or cached features); the loop is
the same for all of them. Timing each execution's `next()` gives the input-wait share (the input-bound signal).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import posixpath
import time

import keras
import numpy as np
import tensorflow as tf

from tltrain import augment, checkpoints, data, data_service, features, keep, model_dir_lock, models, phases, progbar
from tltrain import reporting, run_dir, steps
from tltrain import strategy as strategy_lib
from tltrain.config import RunConfig
from tltrain.job import Job, Phase

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- validation


def prepare(cfg: RunConfig) -> Job:
    """Checks every setting against the records, the model registry, an earlier run in model_dir and the
    devices, before anything is built (the strategy last: multi-worker and TPU strategies wait for their
    cluster). Raises ValueError/FileNotFoundError with a one-line message. With --num_cpu_devices, call
    strategy.configure_cpu_devices first: it changes the process's devices, so the caller decides."""
    t = cfg.validate().train
    run_dir.check_directory("model_dir", t.model_dir)
    image_size = models.validate(cfg.model, cfg.data.image_size)
    info = data.dataset_info(cfg.data)  # a missing dataset.json is a FileNotFoundError naming it
    train_count = info.split_counts.get(cfg.data.train_split, 0)
    validation_count = info.split_counts.get(cfg.data.validation_split, 0)
    if train_count == 0:
        raise ValueError(f"--records_dir={cfg.data.records_dir}: no examples in split '{cfg.data.train_split}'")
    if t.num_classes and t.num_classes != info.num_classes:
        raise ValueError(f"--num_classes={t.num_classes}: the records have {info.num_classes} classes")
    if t.epochs == 0 and t.fine_tune_epochs == 0:
        raise ValueError("--epochs, --fine_tune_epochs: nothing to train (both are 0)")
    if t.freeze == "none" and t.fine_tune_epochs:
        raise ValueError("--fine_tune_epochs: needs --freeze=backbone (with --freeze=none everything trains from the start)")
    if t.stop_at_accuracy and not validation_count:
        raise ValueError(f"--stop_at_accuracy: the records have no '{cfg.data.validation_split}' split to measure it on")
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
    data.warn_if_records_oversized(cfg.data, image_size)  # reads records: after the strategy, which must come first
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
        precision=strategy_lib.resolve_precision(t.mixed_precision, strategy),
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


def make_optimizer(name: str, schedule: keras.optimizers.schedules.LearningRateSchedule, precision: str,
                   ema_decay: float = 0.0):
    """adam | sgd (momentum 0.9) | rmsprop, keeping a moving average of the weights with ema_decay > 0; wrapped
    in a LossScaleOptimizer under float16."""
    ema = keep.optimizer_options(ema_decay)
    if name == "adam":
        optimizer = keras.optimizers.Adam(schedule, **ema)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, **ema)
    elif name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(schedule, **ema)
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


# -------------------------------------------------------------------------------------------------- loop


def _class_weights(job: Job) -> tf.Tensor | None:
    """--class_weight=balanced: total / (classes * count) per class, from the records' training counts."""
    if job.cfg.train.class_weight != "balanced":
        return None
    counts = np.asarray(job.class_counts, dtype=np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
    return tf.constant(weights, tf.float32)


class _Progress:
    """Where the run is (global step, phase, step within the phase, stopped early), with the model and every
    phase's optimizer in one checkpoint. Restored from model_dir when there is a checkpoint."""

    def __init__(self, job: Job, model: keras.Model, optimizers: dict, keeper: keep.Keeper):
        with job.strategy.scope():
            self.variables = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                              for name in ("step", "phase", "phase_step", "stopped_early")}
        checkpoint = tf.train.Checkpoint(model=model, **{f"optimizer_{n}": o for n, o in optimizers.items()},
                                         **self.variables, **keeper.variables)
        self.directory = posixpath.join(job.cfg.train.model_dir, run_dir.CHECKPOINT_DIR)
        self.write_directory = strategy_lib.write_dir(self.directory)  # a temporary one on non-chief workers
        self.manager = tf.train.CheckpointManager(checkpoint, self.write_directory, max_to_keep=3)
        latest = checkpoints.restore_newest(checkpoint, self.directory)
        if latest:
            log.info(f"resumed from {latest}")
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
            optimizers[phase.name] = make_optimizer(cfg.train.optimizer, schedule, job.precision, cfg.train.ema_decay)
            models.set_phase(model, phase.name, cfg.model, cfg.train.fine_tune_at, cfg.train.fine_tune_batchnorm)
            optimizers[phase.name].build(model.trainable_variables)
    return model, augmenter, optimizers


def _crossed(step: int, count: int, every: int) -> bool:
    """Whether the last `count` steps up to `step` crossed a multiple of `every` (0: never)."""
    return bool(every) and step // every != (step - count) // every


def train(job: Job) -> dict:
    """Runs (or resumes) every planned phase. Returns {"step", "stopped_early", "history": [one dict per epoch]}.
    The chief holds model_dir's lock meanwhile: a second run on it is a one-line model_dir_lock.ModelDirInUse."""
    if not strategy_lib.is_chief():
        return _train(job)
    with model_dir_lock.exclusive(job.cfg.train.model_dir):
        return _train(job)


def _train(job: Job) -> dict:
    started_at, out_of_time = time.perf_counter(), False  # --max_seconds
    cfg, strategy, t = job.cfg, job.strategy, job.cfg.train
    k, spe, global_batch = t.steps_per_execution, job.steps_per_epoch, cfg.data.batch_size
    if strategy_lib.is_chief():
        run_dir.write_run_files(t.model_dir, cfg, job.class_names, job.plan)
    replicas = strategy.num_replicas_in_sync
    log.info(f"{type(strategy).__name__}, {replicas} replicas, {job.precision}, global batch {global_batch} "
             f"({global_batch // replicas} per replica), {spe} steps per epoch, "
             f"{job.validation_steps} validation steps")
    model, augmenter, optimizers = _build(job)
    keeper = keep.Keeper(job, model)
    progress = _Progress(job, model, optimizers, keeper)
    history: list[dict] = []
    result = {"step": progress.step, "stopped_early": progress.stopped_early, "history": history}
    remaining = [i for i, p in enumerate(job.phases) if i > progress.phase or
                 (i == progress.phase and progress.phase_step < p.epochs * spe)]
    if progress.stopped_early or not remaining:
        reason = "stopped early (--stop_at_accuracy)" if progress.stopped_early else "complete"
        log.info(f"run already {reason} at step {progress.step}")
        progress.close()
        keeper.close()
        return result

    summaries = reporting.Summaries(job, fresh=progress.step == 0)
    metrics_log = reporting.MetricsLog(t.model_dir, resumed_step=progress.step)
    profiler = reporting.Profiler(job)
    images = phases.ImageTask(job, model, augmenter)
    class_weights = _class_weights(job)

    for index in remaining:
        phase = job.phases[index]
        progress.enter(index)
        total = phase.epochs * spe
        trainable = models.set_phase(model, phase.name, cfg.model, t.fine_tune_at, t.fine_tune_batchnorm)
        log.info(f"[{phase.name}] {trainable} trainable backbone layers, {len(model.trainable_variables)} trainable "
                 f"variables, learning rate {phase.learning_rate:g}, {phase.epochs} epochs of {spe} steps")
        optimizer = optimizers[phase.name]
        if progress.phase_step == 0:
            keeper.start_phase()
        task = phases.task_for(job, phase, images)
        train_steps = steps.make_train_function(job, task.model, optimizer, task.augmenter, class_weights)
        batches = task.batches()
        grid_pending = True
        patience_ended = False
        while progress.phase_step < total and not progress.stopped_early and not out_of_time and not patience_ended:
            epoch_start = progress.phase_step // spe * spe
            epoch_meter, window_meter = reporting.Meter(), reporting.Meter()
            bar = progbar.StepProgress(f"[{phase.name}]", spe, t.progress_seconds, progress.phase_step - epoch_start,
                                         of=f"epoch {epoch_start // spe + 1}/{phase.epochs}")
            while progress.phase_step < epoch_start + spe:
                profiler.before(progress.step)
                started = time.perf_counter()
                batch = next(batches)
                fetched = time.perf_counter()
                if grid_pending:
                    grid = task.augmented_inputs(batch, progress.step)
                    if grid is not None:
                        summaries.augmented_grid(grid, progress.step)
                    grid_pending = False
                totals = train_steps(batch, tf.constant(progress.step, tf.int64)).numpy()
                finished = time.perf_counter()
                progress.advance(k)
                for meter in (epoch_meter, window_meter):
                    meter.add(totals, k, finished - started, fetched - started)
                profiler.after(progress.step)
                bar.update(progress.phase_step - epoch_start, epoch_meter.running(global_batch))
                mid_epoch = progress.phase_step < epoch_start + spe
                if mid_epoch and _crossed(progress.step, k, t.log_steps):
                    summaries.training(window_meter.metrics(global_batch), _learning_rate(optimizer), progress.step)
                    window_meter = reporting.Meter()
                if mid_epoch and _crossed(progress.step, k, t.checkpoint_steps):
                    progress.save()
                if t.max_seconds and time.perf_counter() - started_at >= t.max_seconds:
                    out_of_time = True
                    log.info(f"--max_seconds={t.max_seconds:g}: stopping at step {progress.step}")
                    break
            bar.close()
            learning_rate = _learning_rate(optimizer)
            summaries.training(window_meter.metrics(global_batch), learning_rate, progress.step)
            train_metrics = epoch_meter.metrics(global_batch)
            epoch = progress.phase_step // spe
            position = {"phase": phase.name, "epoch": epoch, "step": progress.step}
            metrics_log.write("epoch", **position, epochs=phase.epochs, seconds=epoch_meter.seconds, **train_metrics,
                              learning_rate=learning_rate)
            validation_started = time.perf_counter()
            bar = progbar.StepProgress(f"[{phase.name}] validation", job.validation_steps, t.progress_seconds)
            with keep.averaged_weights(optimizer):  # what is validated is what is kept
                validation = task.evaluate(bar.update)
                patience_ended = keeper.after_validation(None if validation is None else validation.accuracy,
                                                         progress.step, phase.name)
            bar.close()
            log.info(reporting.epoch_line(phase, epoch, progress.step, epoch_meter.seconds, train_metrics, validation,
                                          learning_rate))
            record = {**position, **train_metrics}
            if validation is not None:
                summaries.evaluation(validation, progress.step)
                scores = {name: getattr(validation, name) for name in reporting.EVALUATION_KEYS}
                metrics_log.write("evaluation", **position, split=cfg.data.validation_split, count=validation.count,
                                  seconds=time.perf_counter() - validation_started, **scores)
                record.update({f"val_{name}": value for name, value in scores.items()})
                if t.stop_at_accuracy and validation.accuracy >= t.stop_at_accuracy:
                    progress.stopped_early = True
                    log.info(f"validation accuracy {validation.accuracy:.4f} >= "
                             f"--stop_at_accuracy={t.stop_at_accuracy}: stopping")
            history.append(record)
            if patience_ended:
                progress.phase_step = total  # the phase is over: a resumed run goes on with the next one
            progress.save()
        if progress.stopped_early or out_of_time:
            break
    profiler.end()
    summaries.close()
    progress.close()
    keeper.close()
    result.update(step=progress.step, stopped_early=progress.stopped_early)
    if strategy_lib.is_chief():
        log.info(f"done at step {progress.step}; TensorBoard: tensorboard --logdir {t.model_dir}")
    return result


def _learning_rate(optimizer) -> float:
    return float(optimizer.learning_rate)
