"""The model a run keeps: the best by validation accuracy, with an exponential moving average of the weights.

A phase can end worse than it was an epoch earlier (fine-tuning a small data set often does), so the model
that evaluate, export and predict use is not the last one: after every validation the weights are written to
model_dir/best when the validation accuracy beats every earlier one (without a validation split: every time,
so `best` is the final model). With --ema_decay the optimizer keeps a moving average of the trained
variables (Keras' use_ema); validation and `best` see the average, training continues on the raw weights,
and the average lives in the optimizer, so it is in every checkpoint and a resumed run continues it
exactly. --patience=N ends the fine-tuning phase (or the one phase of --freeze=none) after N validations
without a better accuracy than the phase's own best so far: fine-tuning first falls below the head it starts
from (new layers move, the inputs are augmented) and then climbs, often past it, so it ends when it stops
climbing, not when it has not yet caught up (Fashion-MNIST at 100 images per class: 0.80, 0.84, 0.85, 0.85,
0.85 after a head at 0.83). The head phase runs to its end (its early validations are noise on a new head,
and its epochs are cheap). The best accuracies and the count are checkpointed with the run's progress, so a
killed run resumes with them. A new phase starts from the best weights so far.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath

import numpy as np
import tensorflow as tf

from tltrain import checkpoints
from tltrain import strategy as strategy_lib

log = logging.getLogger(__name__)
BEST_DIR = "best"


def best_checkpoint(model_dir: str) -> str | None:
    """The kept model's checkpoint in model_dir, or None (a run from before best checkpoints existed)."""
    return tf.train.latest_checkpoint(posixpath.join(model_dir, BEST_DIR))


def optimizer_options(ema_decay: float) -> dict:
    """Keyword arguments of a Keras optimizer for --ema_decay (0: no moving average)."""
    return {"use_ema": True, "ema_momentum": ema_decay} if ema_decay else {}


@contextlib.contextmanager
def averaged_weights(optimizer):
    """Inside: the model's trained variables hold the optimizer's moving average (a no-op without one)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer wraps the one with the EMA
    if not getattr(inner, "use_ema", False):
        yield
        return
    _swap(inner)
    try:
        yield
    finally:
        _swap(inner)


def _swap(optimizer) -> None:
    for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        raw = np.array(variable.numpy())
        variable.assign(average)
        average.assign(raw)


class Keeper:
    """Best checkpoint and patience for one run; `variables` go into the run's progress checkpoint."""

    def __init__(self, job, model):
        self.model_dir = job.cfg.train.model_dir
        self.patience = job.cfg.train.patience
        with job.strategy.scope():
            self.variables = {name: tf.Variable(-1.0, dtype=tf.float64, trainable=False, name=name)
                              for name in ("best_accuracy", "phase_best_accuracy")}
            self.variables["since_best"] = tf.Variable(0, dtype=tf.int64, trainable=False, name="since_best")
        self.checkpoint = tf.train.Checkpoint(model=model)
        directory = posixpath.join(self.model_dir, BEST_DIR)
        self.write_directory = strategy_lib.write_dir(directory)
        self.directory = directory
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_directory, max_to_keep=1)

    @property
    def best_accuracy(self) -> float:
        return float(self.variables["best_accuracy"].numpy())

    def start_phase(self) -> None:
        """A phase starting from its first step: from the best weights so far, with its patience count reset."""
        self.variables["since_best"].assign(0)
        self.variables["phase_best_accuracy"].assign(-1.0)
        latest = checkpoints.restore_newest(self.checkpoint, self.directory, partial=True)
        if latest:
            log.info(f"starting the phase from the best weights so far ({latest}, validation accuracy "
                     f"{self.best_accuracy:.4f})")

    def after_validation(self, accuracy: float | None, step: int, phase_name: str) -> bool:
        """Called with the model holding the weights to keep (the average with --ema_decay). Saves them when they
        are the best yet (always without validation); returns True when --patience says the phase should end."""
        if accuracy is None or accuracy > self.best_accuracy:
            if accuracy is not None:
                self.variables["best_accuracy"].assign(accuracy)
            checkpoints.save(self.manager, step)
        phase_best = float(self.variables["phase_best_accuracy"].numpy())
        if accuracy is None or accuracy > phase_best:
            if accuracy is not None:
                self.variables["phase_best_accuracy"].assign(accuracy)
            self.variables["since_best"].assign(0)
            return False
        self.variables["since_best"].assign_add(1)
        since = int(self.variables["since_best"].numpy())
        if self.patience and since >= self.patience and phase_name != "transfer":
            log.info(f"--patience={self.patience}: no better validation accuracy than the phase's {phase_best:.4f} "
                     f"in {since} validations; ending the phase (the best so far, {self.best_accuracy:.4f}, is kept)")
            return True
        return False

    def close(self) -> None:
        strategy_lib.cleanup_write_dir(self.directory, self.write_directory)
