"""The distributed steps: one maker of replicated steps, the one per-replica augmentation seed, the loss and
hit counts, and the train step every phase runs (on images or on cached features alike).

Each call of the compiled train function runs steps_per_execution steps on a stack of that many per-replica
batches that Python fetched with one `next()`; the in-graph `tf.range` loop keeps the graph one step long.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from tltrain.job import Job

SUM = tf.distribute.ReduceOp.SUM


def per_example_loss(labels: tf.Tensor, probabilities: tf.Tensor, label_smoothing: float) -> tf.Tensor:
    """Categorical crossentropy on one-hot (or mixed) labels, in float32 whatever the compute dtype."""
    return keras.losses.categorical_crossentropy(labels, tf.cast(probabilities, tf.float32),
                                                 label_smoothing=label_smoothing)


def hits(targets: tf.Tensor, probabilities: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example 0/1 floats: top-1 and top-k correct against integer targets."""
    probabilities = tf.cast(probabilities, tf.float32)
    top1 = tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), targets), tf.float32)
    topk = tf.cast(tf.math.in_top_k(targets, probabilities, k), tf.float32)
    return top1, topk


def augment_seed(run_seed: int, step, replicas=None, replica=None) -> tf.Tensor:
    """The [2] seed of one replica's augmentation at one global step: [run_seed, step * replicas + replica], so a
    run is reproducible and every step and replica draws differently. Inside strategy.run `replicas` and
    `replica` default to the current replica's."""
    if replica is None:
        context = tf.distribute.get_replica_context()
        replicas, replica = context.num_replicas_in_sync, context.replica_id_in_sync_group
    step = tf.cast(step, tf.int64)
    return tf.stack([tf.constant(run_seed, tf.int64), step * replicas + tf.cast(replica, tf.int64)])


def replicated(strategy: tf.distribute.Strategy, replica_step: Callable, reduce: bool = True) -> Callable:
    """`replica_step(*args)` run on every replica (call the result inside a tf.function). With `reduce`, every
    output is summed over replicas and workers; without, the outputs stay per replica."""

    def step(*args):
        outputs = strategy.run(replica_step, args=args)
        if not reduce:
            return outputs
        return tf.nest.map_structure(lambda value: strategy.reduce(SUM, value, axis=None), outputs)

    return step


def make_train_function(job: Job, model: keras.Model, optimizer, augmenter: Callable,
                        class_weights: tf.Tensor | None) -> Callable:
    """A tf.function(batch, first_step) running steps_per_execution steps of one phase on `model`; returns the
    summed [loss, correct, top-k correct, examples] over those steps, reduced across replicas and workers.

    `augmenter(inputs, one-hot labels, seed)` runs on the device, in the replica step, seeded by augment_seed."""
    t = job.cfg.train
    num_classes = len(job.class_names)
    global_batch = job.cfg.data.batch_size
    top_k = min(5, num_classes)
    variables = model.trainable_variables

    def replica_step(batch, index, first_step):
        inputs, labels = batch[0][index], batch[1][index]
        seed = augment_seed(t.seed, first_step + tf.cast(index, tf.int64))
        inputs, soft_labels = augmenter(inputs, tf.one_hot(labels, num_classes), seed)
        with tf.GradientTape() as tape:
            probabilities = model(inputs, training=True)
            per_example = per_example_loss(soft_labels, probabilities, t.label_smoothing)
            if class_weights is not None:
                per_example *= tf.reduce_sum(soft_labels * class_weights, axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n([tf.cast(x, tf.float32) for x in model.losses]))
            scaled_loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        top1, topk = hits(tf.argmax(soft_labels, -1, output_type=tf.int32), probabilities, top_k)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([loss, tf.reduce_sum(top1), tf.reduce_sum(topk), count])

    step = replicated(job.strategy, replica_step)

    @tf.function
    def train_steps(batch, first_step):
        totals = tf.zeros([4])
        for index in tf.range(t.steps_per_execution):
            totals += step(batch, index, first_step)
        return totals

    return train_steps
