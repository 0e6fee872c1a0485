"""What a validated run is: the types `train.prepare` returns, in a module of their own so that every part of
the trainer (the loop, the phase tasks, the feature cache) can name them without importing the loop."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tltrain.config import RunConfig


@dataclasses.dataclass(frozen=True)
class Phase:
    """One planned phase: its name (transfer | fine_tune | full: the models.set_phase argument), its epochs
    and its peak learning rate (already scaled with the replicas)."""

    name: str
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
    plan: dict = dataclasses.field(default_factory=dict)  # what tltrain.plan chose and why (saved in config.json)
