"""tltrain.augment: what each augmentation does to pixels and labels, seeding, XLA and replicas, grids."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tltrain import augment
from tltrain.config import AugmentConfig

BATCH, SIZE, CLASSES = 16, 32, 4


@pytest.fixture(scope="module")
def batch():
    """Random uint8 pictures with structure (a gradient plus noise) and one-hot labels."""
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 200, SIZE)[None, None, :, None]
    images = np.clip(gradient + rng.integers(0, 55, (BATCH, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    labels = tf.one_hot(np.arange(BATCH) % CLASSES, CLASSES)
    return tf.constant(images), labels


def run(cfg: AugmentConfig, batch, seed=(7, 1)):
    images, labels = batch
    return augment.Augmenter(cfg, CLASSES)(images, labels, tf.constant(seed, tf.int64))


def test_presets_and_overrides():
    assert augment.resolve(AugmentConfig(preset="seed_recipe")).rotation == 40.0
    assert not augment.resolve(AugmentConfig(preset="none")).horizontal_flip
    custom = augment.resolve(AugmentConfig(preset="seed_recipe", rotation=10.0, horizontal_flip=False))
    assert (custom.rotation, custom.shift, custom.horizontal_flip) == (10.0, 0.2, False)
    with pytest.raises(ValueError, match="--augment=bogus: must be one of none, flip, seed_recipe"):
        augment.resolve(AugmentConfig(preset="bogus"))
    with pytest.raises(ValueError, match=r"--zoom=1.5: must be in \[0, 1\)"):
        augment.resolve(AugmentConfig(zoom=1.5))


def test_seed_recipe_changes_pixels_keeps_labels_and_is_seeded(batch):
    images, labels = batch
    out, out_labels = run(AugmentConfig(preset="seed_recipe"), batch)
    assert out.dtype == tf.float32 and out.shape == images.shape
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
    changed = tf.reduce_mean(tf.abs(out - tf.cast(images, tf.float32)), axis=[1, 2, 3])
    assert float(tf.reduce_min(changed)) > 1.0  # every image moved
    np.testing.assert_array_equal(out_labels, labels)
    again, _ = run(AugmentConfig(preset="seed_recipe"), batch)
    np.testing.assert_array_equal(out, again)  # same seed, same pixels
    for other_seed in [(7, 2), (8, 1)]:  # another step or replica, another draw
        other, _ = run(AugmentConfig(preset="seed_recipe"), batch, seed=other_seed)
        assert float(tf.reduce_mean(tf.abs(other - out))) > 1.0


def test_none_is_the_identity_and_flip_mirrors(batch):
    images, _ = batch
    out, _ = run(AugmentConfig(preset="none"), batch)
    np.testing.assert_array_equal(out, tf.cast(images, tf.float32))
    flipped, _ = run(AugmentConfig(preset="flip"), batch)
    mirrored = tf.reverse(tf.cast(images, tf.float32), [2])
    same = [bool(tf.reduce_all(f == i)) for f, i in zip(flipped, tf.cast(images, tf.float32))]
    mirror = [bool(tf.reduce_all(f == m)) for f, m in zip(flipped, mirrored)]
    assert all(s != m for s, m in zip(same, mirror))  # each image exactly as is, or exactly mirrored
    assert 0 < sum(mirror) < BATCH


@pytest.mark.parametrize("fill_mode", augment.FILL_MODES)
def test_one_resample_matches_tensorflows_projective_transform(batch, fill_mode):
    images, _ = batch
    cfg = augment.resolve(AugmentConfig(preset="seed_recipe", vertical_flip=True, fill_mode=fill_mode))
    transforms = augment.affine_transforms(cfg, tf.shape(images), tf.constant([3, 4], tf.int64))
    ours = augment.Augmenter(cfg, CLASSES)._resample(images, transforms, fill_mode=fill_mode)
    reference = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms, output_shape=[SIZE, SIZE], fill_value=0.0,
        interpolation="BILINEAR", fill_mode=fill_mode.upper())
    np.testing.assert_allclose(ours, reference, atol=0.02)


def test_shift_moves_the_picture(batch):
    """A transform of pure translation by (+3, +2) pixels reads input pixel (x+3, y+2) into (x, y)."""
    images, _ = batch
    shift = tf.constant([[1.0, 0.0, 3.0, 0.0, 1.0, 2.0, 0.0, 0.0]] * BATCH)
    out = augment.Augmenter(AugmentConfig(), CLASSES)._resample(images, shift, fill_mode="nearest")
    np.testing.assert_array_equal(out[:, :-2, :-3], tf.cast(images[:, 2:, 3:], tf.float32))


def test_contrast_and_brightness_stay_in_range_and_keep_means_ordered(batch):
    images, _ = batch
    out, _ = run(AugmentConfig(preset="none", contrast=0.5, brightness=0.3), batch)
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
    assert float(tf.reduce_mean(tf.abs(out - tf.cast(images, tf.float32)))) > 5.0
    # A contrast change keeps each image's left-to-right gradient: left columns stay darker than right ones.
    assert bool(tf.reduce_all(tf.reduce_mean(out[:, :, :4], [1, 2, 3]) <= tf.reduce_mean(out[:, :, -4:], [1, 2, 3])))


def black_and_white_batch():
    """Even images black (class 0), odd images white (class 1): pixel means tell how much each one mixed."""
    images = tf.constant(np.where(np.arange(BATCH)[:, None, None, None] % 2, 255, 0) * np.ones((1, SIZE, SIZE, 3)),
                         tf.uint8)
    return images, tf.one_hot(np.arange(BATCH) % 2, CLASSES)


@pytest.mark.parametrize("mix", ["mixup_alpha", "cutmix_alpha"])
def test_mixing_weights_labels_by_the_pixels_taken(mix):
    out, labels = run(AugmentConfig(preset="none", **{mix: 1.0}), black_and_white_batch())
    np.testing.assert_allclose(tf.reduce_sum(labels, axis=1), 1.0, rtol=1e-5)
    # The white fraction of every image equals its label weight for the white class (partners alternate).
    white = tf.reduce_mean(out, axis=[1, 2, 3]) / 255.0
    np.testing.assert_allclose(white, labels[:, 1], atol=1e-4)
    assert float(tf.reduce_max(tf.abs(labels[:, 1] - np.arange(BATCH) % 2))) > 0.05  # some actually mixed
    if mix == "cutmix_alpha":  # pasted boxes: pixels stay black or white
        assert set(np.unique(out.numpy())) <= {0.0, 255.0}


def test_beta_draws_have_the_right_moments():
    for alpha in (0.2, 1.0, 2.0):
        draws = augment._beta(20000, alpha, tf.constant([1, 2], tf.int64)).numpy()
        assert abs(draws.mean() - 0.5) < 0.01
        assert abs(draws.var() - 1 / (4 * (2 * alpha + 1))) < 0.005


def test_everything_compiles_with_xla(batch):
    cfg = AugmentConfig(preset="seed_recipe", mixup_alpha=0.4, cutmix_alpha=1.0, contrast=0.2, brightness=0.1)
    augmenter = augment.Augmenter(cfg, CLASSES)
    compiled = tf.function(lambda x, y, s: augmenter(x, y, s), jit_compile=True)
    images, labels = compiled(*batch, tf.constant([5, 9], tf.int64))
    again, _ = compiled(*batch, tf.constant([5, 9], tf.int64))
    np.testing.assert_array_equal(images, again)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    np.testing.assert_allclose(tf.reduce_sum(labels, axis=1), 1.0, rtol=1e-5)


def test_grid_image_and_png(tmp_path, batch):
    images, _ = batch
    grid = augment.grid_image(tf.cast(images[:5], tf.float32))  # 2 rows of 3
    assert grid.shape == (1, 2 * SIZE, 3 * SIZE, 3) and grid.dtype == tf.uint8
    np.testing.assert_array_equal(grid[0, SIZE:, SIZE:2 * SIZE], images[4])  # row 1, column 1
    assert not grid[0, SIZE:, 2 * SIZE:].numpy().any()  # the empty sixth cell
    path = tmp_path / "grid.png"
    augment.save_grid(images[:5], str(path))
    np.testing.assert_array_equal(tf.io.decode_png(path.read_bytes()), grid[0])


@pytest.mark.slow
def test_augments_records_per_replica_under_mirrored_strategy(tmp_path, repo_root):
    """Two logical CPUs: the input pipeline through distribute_datasets_from_function, the augmenter in
    strategy.run seeded by step and replica, as the trainer does. Needs its own process for the devices."""
    script = textwrap.dedent("""
        import sys, numpy as np, tensorflow as tf
        sys.path.insert(0, "tests")
        import test_data
        from tltrain import augment, data
        from tltrain.config import AugmentConfig, DataConfig
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import pathlib
        records_dir = test_data.write_records(pathlib.Path(sys.argv[1]), {"train": (12, 2)})
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        cfg = DataConfig(records_dir=records_dir, batch_size=8)
        with strategy.scope():
            augmenter = augment.Augmenter(AugmentConfig(preset="seed_recipe"), 3)
        dataset = strategy.distribute_datasets_from_function(lambda c: data.make_train_dataset(cfg, 24, c))

        @tf.function
        def step(batch, step_number):
            def replica_fn(images, labels):
                replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                seed = tf.stack([tf.constant(0, tf.int64), step_number * 2 + tf.cast(replica, tf.int64)])
                out, _ = augmenter(images, tf.one_hot(labels, 3), seed)  # (flat colours: moved, they look the same)
                same_input, _ = augmenter(fixed, tf.one_hot(labels, 3), seed)  # differs only by the seed
                return out, same_input
            return strategy.run(replica_fn, args=batch)

        fixed = tf.cast(tf.reshape(tf.range(4 * 24 * 24 * 3) % 251, [4, 24, 24, 3]), tf.uint8)
        iterator = iter(dataset)
        for step_number in range(2):
            outputs, same_input = step(next(iterator), tf.constant(step_number, tf.int64))
            images = [x.numpy() for x in strategy.experimental_local_results(outputs)]
            assert [(x.shape, x.dtype) for x in images] == [((4, 24, 24, 3), np.float32)] * 2
            first, second = (x.numpy() for x in strategy.experimental_local_results(same_input))
            assert np.abs(first - fixed.numpy()).mean() > 1.0
            assert np.abs(first - second).mean() > 1.0  # each replica draws its own transforms
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=300, cwd=repo_root)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
