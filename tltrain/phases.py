"""One interface for what a phase trains on, so the training loop never asks which kind of phase it runs.

A PhaseTask gives the loop the model whose weights the phase's optimizer updates, the batches it reads, how
they are augmented on the device, and how it is evaluated. ImageTask trains the classifier on the records'
images; features.CachedTask trains the classifier's own top layers on stored features of its frozen lower
layers (--cache_features, --cache_fine_tune); ValidatedOnCache trains on images and validates on stored
activations (phase 2 with --cache_features alone). task_for picks one for each planned phase.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Protocol

import keras
import tensorflow as tf

from tltrain import data, data_service, features, steps
from tltrain import evaluate as evaluate_lib
from tltrain.job import Job, Phase

log = logging.getLogger(__name__)


class PhaseTask(Protocol):
    """What one phase needs to train.

    model: the model the optimizer trains (it shares its layers, and so its weights, with the classifier).
    augmenter: (inputs, one-hot labels, seed [2]) -> (inputs, labels), run in the replica step.
    """

    model: keras.Model
    augmenter: Callable

    def batches(self) -> Iterator:
        """The distributed iterator of the phase's training stream: one next() is one execution, a stack of
        steps_per_execution per-replica (inputs, int32 labels) batches."""

    def evaluate(self, on_step: Callable[[int], None] | None = None) -> evaluate_lib.EvalResult | None:
        """The model on the validation split (None without one); on_step(batches done) after every batch."""

    def augmented_inputs(self, batch, step: int) -> tf.Tensor | None:
        """Up to 16 images of `batch` as the first replica's step at global `step` augments them (for
        TensorBoard), or None when the inputs are not images."""


class ImageTask:
    """The classifier on images from the records: one training stream for the whole run (an iterator over a
    dataset repeated forever, started by the first phase that reads it, since building a feature cache first
    needs the cores), on-device augmentation, and the evaluator on the validation images."""

    def __init__(self, job: Job, model: keras.Model, augmenter: Callable):
        cfg = job.cfg
        self.job, self.model, self.augmenter = job, model, augmenter
        self._dataset = job.strategy.distribute_datasets_from_function(
            lambda context: data.make_train_dataset(cfg.data, cfg.data.image_size, context)
            .batch(cfg.train.steps_per_execution, drop_remainder=True).prefetch(1))
        self._iterator = None
        self._evaluator = (evaluate_lib.make_evaluator(job.strategy, model, cfg, cfg.data.validation_split,
                                                       len(job.class_names), job.validation_steps)
                           if job.validation_steps else None)

    def batches(self) -> Iterator:
        if self._iterator is None:
            self._iterator = data_service.watched(self._dataset, self.job.cfg.data)
        return self._iterator

    def evaluate(self, on_step=None):
        return self._evaluator(on_step) if self._evaluator else None

    def augmented_inputs(self, batch, step: int) -> tf.Tensor:
        strategy = self.job.strategy
        images = strategy.experimental_local_results(batch[0])[0][0][:16]
        labels = strategy.experimental_local_results(batch[1])[0][0][:16]
        seed = steps.augment_seed(self.job.cfg.train.seed, step, strategy.num_replicas_in_sync, replica=0)
        augmented, _ = self.augmenter(images, tf.one_hot(labels, len(self.job.class_names)), seed)
        return augmented


class ValidatedOnCache:
    """The run's image task, validated by another evaluator (cached_validation's)."""

    def __init__(self, images: ImageTask, evaluator: Callable):
        self.model, self.augmenter = images.model, images.augmenter
        self._images, self._evaluator = images, evaluator

    def batches(self) -> Iterator:
        return self._images.batches()

    def evaluate(self, on_step=None):
        return self._evaluator(on_step)

    def augmented_inputs(self, batch, step: int) -> tf.Tensor:
        return self._images.augmented_inputs(batch, step)


def validates_cached(job: Job, phase_name: str) -> bool:
    """Whether phase 2 trains on images but validates on the validation split's stored activations below
    --fine_tune_at: with --cache_features and without --cache_fine_tune. The frozen layers below the cut
    give every validation image the same activations all phase long, so one pass stores them, and each
    validation runs only the layers from the cut on (on a small set, validating through the whole backbone
    cost as much as the epoch's training)."""
    t = job.cfg.train
    return phase_name == "fine_tune" and t.cache_features and not t.cache_fine_tune and bool(job.validation_steps)


def cached_validation(job: Job, model: keras.Model) -> Callable | None:
    """The evaluator of `validates_cached`: `model` (the classifier) from the cut on, over the stored
    activations (built when missing). None, with a line, when --fine_tune_at is not a cut one tensor crosses."""
    try:
        lower, top, cut = features.fine_tune_models(model, job.cfg)
    except ValueError as error:
        log.info(f"feature cache: phase 2 validates on images ({str(error).split(': ', 1)[-1]})")
        return None
    entry = features.ensure_entry(job, lower, job.cfg.data.validation_split, 0, features.weights_digest(lower), cut)
    return features.evaluator(job, top, entry)


def task_for(job: Job, phase: Phase, images: ImageTask) -> PhaseTask:
    """The task `phase` trains with: a cached one where the flags ask for it (building its cache entries when
    missing), else the run's image task, validated on cached activations where `validates_cached`."""
    if features.applies(job.cfg, phase.name):
        return features.cached_task(job, images.model, phase.name)
    if validates_cached(job, phase.name):
        evaluator = cached_validation(job, images.model)
        if evaluator is not None:
            return ValidatedOnCache(images, evaluator)
    return images
