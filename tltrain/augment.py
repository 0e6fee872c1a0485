"""Augmentation on the accelerator, inside the replicated train step, on the uint8 batches the host ships.

Randomness comes only from the [2] seed tensor of each call (stateless random ops): the trainer passes
[run_seed, step * replicas + replica], so a run is reproducible and every step and replica gets different
draws. (The numbers depend on the device and on XLA, as for every stateless op.) Never applied in eval or
predict.

Why not Keras preprocessing layers, the first choice? Measured by `tools/bench_input.py --compare_augment`
(batch 64 of 224x224, this 2-core CPU): flip, rotation, translation, zoom and shear as five Keras layers cost
one resampling pass each, 40 images/s; here they are composed into ONE affine map per image and resampled
once, in an XLA-compiled gather: 400 images/s, 10x. The layers also could not meet the contract: Keras 3
random layers draw from an int seed fixed at construction or a SeedGenerator variable, never from a per-call
seed tensor, and their resampling op (ImageProjectiveTransformV3) has no XLA kernel, so it cannot run in a
compiled TPU step. On a CPU the one resample still costs 1.1-1.4 ms per 224x224 image (`--profile`).
"""

from __future__ import annotations

import dataclasses
import math
import typing

import tensorflow as tf

from tltrain.config import AugmentConfig, FillMode

_OFF = dict(horizontal_flip=False, vertical_flip=False, rotation=0.0, shift=0.0, zoom=0.0, shear=0.0,
            contrast=0.0, brightness=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)
PRESETS = {
    "none": _OFF,
    "flip": dict(_OFF, horizontal_flip=True),
    # The ImageDataGenerator recipe of the Keras blog post this project replaces.
    "seed_recipe": dict(_OFF, horizontal_flip=True, rotation=40.0, shift=0.2, zoom=0.2, shear=0.2),
}
FILL_MODES = typing.get_args(FillMode)


def resolve(cfg: AugmentConfig) -> AugmentConfig:
    """The preset's values, except every field set away from its AugmentConfig default, which wins."""
    cfg.validate()
    defaults = AugmentConfig()
    values = {name: (getattr(cfg, name) if getattr(cfg, name) != getattr(defaults, name) else preset_value)
              for name, preset_value in PRESETS[cfg.preset].items()}
    return dataclasses.replace(cfg, **values)


class Augmenter:
    """augmenter(images uint8 [B,H,W,3], labels float32 [B,C], seed int [2]) -> (float32 images in [0, 255],
    float32 labels [B,C]). Labels change only with mixup/cutmix. Safe in strategy.run, tf.function and XLA."""

    def __init__(self, cfg: AugmentConfig, num_classes: int):
        self.cfg = resolve(cfg)
        self.num_classes = num_classes
        c = self.cfg
        self.geometric = bool(c.rotation or c.shift or c.zoom or c.shear)
        # One compiled resampling function per Augmenter; XLA specialises it per batch shape.
        self._resample = tf.function(_resample_bilinear, jit_compile=True, reduce_retracing=True)

    def __call__(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        c = self.cfg
        geometric_seed, color_seed, mix_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3))
        labels = tf.cast(labels, tf.float32)
        if self.geometric:
            transforms = affine_transforms(c, tf.shape(images), geometric_seed)
            images = self._resample(images, transforms, fill_mode=c.fill_mode)
        else:
            images = tf.cast(_random_flips(images, c, geometric_seed), tf.float32)
        if c.contrast or c.brightness:
            images = _contrast_brightness(images, c, color_seed)
        if c.mixup_alpha or c.cutmix_alpha:
            images, labels = _mix(images, labels, c, mix_seed)
        return images, labels


# ---------------------------------------------------------------------------------------------- geometry


def affine_transforms(cfg: AugmentConfig, shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[B, 8] projective transforms (ImageProjectiveTransformV3 layout) mapping output to input pixels:
    flips, then zoom, shear, rotation about the centre, then the shift, as ImageDataGenerator composes them."""
    batch, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    u = tf.random.stateless_uniform([8, batch], seed)
    symmetric = 2.0 * u - 1.0  # uniform in [-1, 1)
    flip_x = tf.where(u[0] < 0.5, -1.0, 1.0) if cfg.horizontal_flip else tf.ones([batch])
    flip_y = tf.where(u[1] < 0.5, -1.0, 1.0) if cfg.vertical_flip else tf.ones([batch])
    angle = symmetric[2] * (cfg.rotation * math.pi / 180.0)
    zoom_x, zoom_y = 1.0 + symmetric[3] * cfg.zoom, 1.0 + symmetric[4] * cfg.zoom
    shear = symmetric[5] * cfg.shear
    shift_x, shift_y = symmetric[6] * cfg.shift * width, symmetric[7] * cfg.shift * height
    cos, sin = tf.cos(angle), tf.sin(angle)
    shear_sin, shear_cos = tf.sin(shear), tf.cos(shear)
    # M = rotation @ shear @ zoom @ flip, acting on output coordinates centred on the image centre.
    m00 = cos * zoom_x * flip_x
    m01 = (-cos * shear_sin - sin * shear_cos) * zoom_y * flip_y
    m10 = sin * zoom_x * flip_x
    m11 = (-sin * shear_sin + cos * shear_cos) * zoom_y * flip_y
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    zeros = tf.zeros([batch])
    return tf.stack([m00, m01, cx + shift_x - m00 * cx - m01 * cy,
                     m10, m11, cy + shift_y - m10 * cx - m11 * cy, zeros, zeros], axis=1)


def _fold(coordinate: tf.Tensor, size: tf.Tensor, fill_mode: str) -> tf.Tensor:
    """Maps coordinates outside [0, size-1] back inside: edge pixel repeated, or mirrored about the edge."""
    if fill_mode == "reflect":
        period = 2.0 * size
        coordinate = tf.math.floormod(coordinate + 0.5, period)
        coordinate = tf.where(coordinate >= size, period - coordinate, coordinate) - 0.5
    return tf.clip_by_value(coordinate, 0.0, size - 1.0)


def _resample_bilinear(images: tf.Tensor, transforms: tf.Tensor, fill_mode: str) -> tf.Tensor:
    """images uint8 [B,H,W,C] sampled bilinearly at transforms(output pixel) -> float32 [B,H,W,C].

    Plain gathers, so XLA compiles it (CPU, GPU, TPU); one pass over the output pixels for the whole affine map.
    """
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ys, xs = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    t = transforms[:, :, None, None]
    x = _fold(t[:, 0] * xs + t[:, 1] * ys + t[:, 2], w, fill_mode)
    y = _fold(t[:, 3] * xs + t[:, 4] * ys + t[:, 5], h, fill_mode)
    x0, y0 = tf.floor(x), tf.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, width - 1), tf.minimum(y0 + 1, height - 1)
    pixels = tf.reshape(images, [-1, channels])
    row = tf.range(batch)[:, None, None] * height

    def at(yy, xx):
        return tf.cast(tf.gather(pixels, (row + yy) * width + xx), tf.float32)

    top = at(y0, x0) + wx * (at(y0, x1) - at(y0, x0))
    bottom = at(y1, x0) + wx * (at(y1, x1) - at(y1, x0))
    return top + wy * (bottom - top)


def _random_flips(images: tf.Tensor, cfg: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    u = tf.random.stateless_uniform([2, tf.shape(images)[0], 1, 1, 1], seed)
    if cfg.horizontal_flip:
        images = tf.where(u[0] < 0.5, tf.reverse(images, [2]), images)
    if cfg.vertical_flip:
        images = tf.where(u[1] < 0.5, tf.reverse(images, [1]), images)
    return images


# ---------------------------------------------------------------------------------------- colour, mixing


def _contrast_brightness(images: tf.Tensor, cfg: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """Per image: contrast factor in [1-c, 1+c] about the per-channel mean (as keras.layers.RandomContrast),
    plus a brightness offset in [-b, b] * 255 (as keras.layers.RandomBrightness), then clipped to [0, 255]."""
    u = 2.0 * tf.random.stateless_uniform([2, tf.shape(images)[0], 1, 1, 1], seed) - 1.0
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    factor, offset = 1.0 + u[0] * cfg.contrast, u[1] * cfg.brightness * 255.0
    return tf.clip_by_value((images - mean) * factor + mean + offset, 0.0, 255.0)


def _gamma(size, alpha: float, seed: tf.Tensor, candidates: int = 16) -> tf.Tensor:
    """Gamma(alpha) samples by Marsaglia-Tsang with a fixed number of candidates instead of a rejection loop:
    tf.random.stateless_gamma has no XLA kernel. Each candidate is accepted with probability > 0.95, so all 16
    failing (then the mode is returned) happens about once in 1e20 draws."""
    normal_seed, uniform_seed, boost_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    d = (alpha + 1.0 if alpha < 1.0 else alpha) - 1.0 / 3.0  # alpha < 1: Gamma(alpha + 1) * U^(1/alpha)
    c = 1.0 / math.sqrt(9.0 * d)
    x = tf.random.stateless_normal([candidates, size], normal_seed)
    u = tf.random.stateless_uniform([candidates, size], uniform_seed)
    v = (1.0 + c * x) ** 3
    safe_v = tf.maximum(v, 1e-12)
    accepted = (v > 0) & (tf.math.log(u) < 0.5 * x * x + d - d * safe_v + d * tf.math.log(safe_v))
    first = tf.argmax(tf.cast(accepted, tf.int32), axis=0)
    value = d * tf.gather(tf.transpose(safe_v), first, batch_dims=1)
    value = tf.where(tf.reduce_any(accepted, axis=0), value, d)
    if alpha < 1.0:
        boost = tf.random.stateless_uniform([size], boost_seed, minval=1e-12, maxval=1.0)
        value *= boost ** (1.0 / alpha)
    return value


def _beta(size, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a, b = _gamma(size, alpha, seeds[0]), _gamma(size, alpha, seeds[1])
    return a / tf.maximum(a + b, 1e-12)


def _mix(images: tf.Tensor, labels: tf.Tensor, cfg: AugmentConfig, seed: tf.Tensor):
    """Mixup or CutMix with the batch reversed as partner (each example's weight from Beta(alpha, alpha)).
    With both alphas set, each batch uses one of them, chosen by a coin."""
    choice_seed, mixup_seed, cutmix_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if not cfg.cutmix_alpha:
        return _mixup(images, labels, cfg.mixup_alpha, mixup_seed)
    if not cfg.mixup_alpha:
        return _cutmix(images, labels, cfg.cutmix_alpha, cutmix_seed)
    coin = tf.random.stateless_uniform([], choice_seed)
    return tf.cond(coin < 0.5, lambda: _mixup(images, labels, cfg.mixup_alpha, mixup_seed),
                   lambda: _cutmix(images, labels, cfg.cutmix_alpha, cutmix_seed))


def _mixup(images, labels, alpha: float, seed):
    weight = _beta(tf.shape(images)[0], alpha, seed)
    w = weight[:, None, None, None]
    mixed = w * images + (1.0 - w) * tf.reverse(images, [0])
    return mixed, weight[:, None] * labels + (1.0 - weight[:, None]) * tf.reverse(labels, [0])


def _cutmix(images, labels, alpha: float, seed):
    """Pastes a box of area (1 - weight) of the partner image; labels weighted by the box's area after clipping."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    beta_seed, centre_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    side = tf.sqrt(1.0 - _beta(batch, alpha, beta_seed))
    centre = tf.random.stateless_uniform([2, batch], centre_seed)

    def span(size, centre_fraction):
        size_f = tf.cast(size, tf.float32)
        low = tf.clip_by_value(tf.round((centre_fraction - side / 2) * size_f), 0.0, size_f)
        high = tf.clip_by_value(tf.round((centre_fraction + side / 2) * size_f), 0.0, size_f)
        positions = tf.range(size_f)[None, :]
        return (positions >= low[:, None]) & (positions < high[:, None]), (high - low) / size_f

    rows, row_fraction = span(height, centre[0])
    columns, column_fraction = span(width, centre[1])
    box = rows[:, :, None, None] & columns[:, None, :, None]
    mixed = tf.where(box, tf.reverse(images, [0]), images)
    kept = (1.0 - row_fraction * column_fraction)[:, None]
    return mixed, kept * labels + (1.0 - kept) * tf.reverse(labels, [0])


# ------------------------------------------------------------------------------------------------ grids


def grid_image(images: tf.Tensor) -> tf.Tensor:
    """[N,H,W,3] images (uint8, or float in [0, 255]) -> uint8 [1, rows*H, cols*W, 3], a near-square grid."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.saturate_cast(tf.round(images), tf.uint8)
    count, height, width = images.shape[0], images.shape[1], images.shape[2]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    images = tf.concat([images, tf.zeros([rows * cols - count, height, width, 3], tf.uint8)], axis=0)
    grid = tf.reshape(images, [rows, cols, height, width, 3])
    grid = tf.reshape(tf.transpose(grid, [0, 2, 1, 3, 4]), [1, rows * height, cols * width, 3])
    return grid


def save_grid(images: tf.Tensor, path: str) -> None:
    """Writes grid_image(images) as a PNG (any tf.io.gfile path)."""
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(tf.io.encode_png(grid_image(images)[0]).numpy())
