"""--cache_features: the cache is built once and reused, rebuilt when the backbone or the records change, the
head trained on it is the classifier's head (same predictions on images, same evaluation), and a cached run
learns like an uncached one."""

import dataclasses
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import write_color_records

from tltrain import data, evaluate, features, models, run_dir, train
from tltrain.config import RunConfig


def cached_config(records, model_dir, **train_fields) -> RunConfig:
    """simple_cnn at 32 px, frozen random backbone (its pooled features separate the colour classes), batch 16."""
    cfg = RunConfig()
    # Crops of at least 80%: the images hold a distracting square that small random crops would zoom in on.
    cfg.data = dataclasses.replace(cfg.data, records_dir=str(records), image_size=32, batch_size=16,
                                   crop_area_range=(0.8, 1.0))
    cfg.model = dataclasses.replace(cfg.model, model="simple_cnn", weights="none")
    cfg.augment = dataclasses.replace(cfg.augment, preset="none")
    fields = dict(model_dir=str(model_dir), epochs=6, learning_rate=0.1, cache_features=True, mixed_precision="none")
    cfg.train = dataclasses.replace(cfg.train, **{**fields, **train_fields})
    return cfg


def in_model_dir(cfg: RunConfig, model_dir: pathlib.Path) -> RunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, model_dir=str(model_dir)))


def entries(cache_dir: pathlib.Path) -> dict[str, dict[str, int]]:
    """{entry directory name: {file name: mtime_ns}} of the complete entries in a cache directory."""
    return {d.name: {f.name: f.stat().st_mtime_ns for f in d.iterdir()}
            for d in sorted(cache_dir.iterdir()) if (d / features.MARKER_FILE).exists()}


@pytest.fixture(scope="module")
def cached_runs(tmp_path_factory, color_records):
    """cached_runs(precision): one cached run (6 head epochs, then 1 fine-tune epoch) under --mixed_precision,
    made on first use: (config, job precision, result)."""
    runs = {}

    def run(precision: str):
        if precision not in runs:
            model_dir = tmp_path_factory.mktemp(f"cached_{precision}") / "run"
            cfg = cached_config(color_records, model_dir, fine_tune_epochs=1, fine_tune_learning_rate=1e-4,
                                mixed_precision=precision)
            job = train.prepare(cfg)
            runs[precision] = cfg, job.precision, train.train(job)
        return runs[precision]

    return run


@pytest.fixture(scope="module")
def cached_run(cached_runs):
    cfg, _, result = cached_runs("none")
    return cfg, result


def test_flags_that_cannot_use_a_cache_fail_with_one_line(tmp_path, color_records):
    cfg = cached_config(color_records, tmp_path, cache_features=False, cache_augmented_views=2)
    with pytest.raises(ValueError, match="--cache_augmented_views: only applies with --cache_features"):
        train.prepare(cfg)
    with pytest.raises(ValueError, match="--cache_features: needs a phase 1 with a frozen backbone"):
        train.prepare(cached_config(color_records, tmp_path, freeze="none"))
    with pytest.raises(ValueError, match="--cache_augmented_views=-1: must be >= 0"):
        train.prepare(cached_config(color_records, tmp_path, cache_augmented_views=-1))
    with pytest.raises(ValueError, match="--max_seconds=-1: must be >= 0"):
        train.prepare(cached_config(color_records, tmp_path, max_seconds=-1))


def test_eval_features_cover_every_vector_once_padded_to_equal_batches(tmp_path):
    writer = features._ShardWriter(str(tmp_path), num_shards=2)
    vectors = np.arange(13 * 4, dtype=np.float32).reshape(13, 4)
    for start in range(0, 13, 5):
        writer.write(vectors[start:start + 5], np.arange(start, min(start + 5, 13)))
    writer.finish({"dim": 4})
    entry = features.read_entry(str(tmp_path))
    assert entry.count == 13 and entry.dim == 4 and len(entry.files) == 2
    cfg = RunConfig()
    cfg.data = dataclasses.replace(cfg.data, batch_size=4)
    seen, batches = [], []
    for index in range(2):  # two input pipelines, one replica each
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index, num_replicas_in_sync=2)
        pipeline = list(features.eval_features(entry, cfg, context))
        batches.append(len(pipeline))
        for x, y in pipeline:
            assert x.shape == (2, 4)
            for row, label in zip(x.numpy(), y.numpy()):
                if label >= 0:
                    np.testing.assert_array_equal(row, vectors[label])
                    seen.append(int(label))
                else:
                    assert not row.any()
    assert sorted(seen) == list(range(13)) and batches == [4, 4]  # ceil(13 / 4) steps on every pipeline
    train_batch = next(iter(features.train_features(entry, cfg)))
    assert train_batch[0].shape == (4, 4) and train_batch[1].dtype == tf.int32


def test_head_model_shares_the_classifiers_head_weights():
    cfg = cached_config("", "")
    cfg.model = dataclasses.replace(cfg.model, head_units=(8,))
    model = run_dir.build_model(cfg, 3, "float32")
    head = features.head_model(model, "avg")
    assert [layer.name for layer in head.layers[1:]] == ["head_dropout_0", "head_dense_0", "dropout", "predictions"]
    assert {id(v) for v in head.trainable_variables} == {id(v) for v in model.get_layer("predictions").weights} | \
        {id(v) for v in model.get_layer("head_dense_0").weights}
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    pooled = features.feature_model(model, "avg")(images)
    np.testing.assert_allclose(head(pooled).numpy(), model(images).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_cache_is_built_once_reused_by_later_runs_and_rebuilt_when_inputs_change(tmp_path, color_records, tltrain_log):
    cache = tmp_path / "cache"
    first = cached_config(color_records, tmp_path / "a", epochs=1, feature_cache_dir=str(cache))
    train.train(train.prepare(first))
    built = entries(cache)
    assert sorted(name.split("-")[0] for name in built) == ["train", "validation"]
    assert "feature cache: built" in tltrain_log.read()

    train.train(train.prepare(in_model_dir(first, tmp_path / "b")))
    out = tltrain_log.read()
    assert out.count("feature cache: reusing") == 2 and "feature cache: built" not in out
    assert entries(cache) == built  # same files, not rewritten

    other_backbone = dataclasses.replace(first, train=dataclasses.replace(first.train, model_dir=str(tmp_path / "c"),
                                                                          seed=1))  # other random weights
    train.train(train.prepare(other_backbone))
    assert tltrain_log.read().count("feature cache: built") == 2
    other_records = write_color_records(tmp_path / "records2", {"train": 8, "validation": 4}, seed=5)
    changed = dataclasses.replace(first, data=dataclasses.replace(first.data, records_dir=str(other_records)),
                                  train=dataclasses.replace(first.train, model_dir=str(tmp_path / "d")))
    train.train(train.prepare(changed))
    assert tltrain_log.read().count("feature cache: built") == 2
    after = entries(cache)
    assert len(after) == 6 and all(after[name] == files for name, files in built.items())

    # An interrupted build (no cache.json) is not used: the entry is built again.
    marker = cache / next(name for name in built if name.startswith("train")) / features.MARKER_FILE
    marker.unlink()
    (marker.parent / "features-00000-of-00001.tfrecord.incomplete").write_bytes(b"left by a killed build")
    train.train(train.prepare(in_model_dir(first, tmp_path / "e")))
    assert tltrain_log.read().count("feature cache: built") == 1 and marker.exists()
    assert not list(cache.glob("*/*.incomplete"))


# How far the image path may be from the cached one. float32: rounding only. mixed_bfloat16: the backbone's
# activations are rounded to bfloat16 (8 significant bits, a relative step of 2^-8 = 0.4%) after every layer,
# and the same image in another batch (1000 here, 16 when the cache was built) may take another kernel whose
# float32 sums round to the neighbouring bfloat16 value; a one-step change in a pooled feature moves a
# probability by at most p(1-p) * 0.4% of the logit it feeds, so 1e-2 covers a logit of 10 in the worst case.
PARITY_ATOL = {"none": 1e-6, "bfloat16": 1e-2}


@pytest.mark.slow
@pytest.mark.parametrize("precision", PARITY_ATOL)
def test_head_trained_on_the_cache_predicts_the_same_on_images_and_evaluates_the_same(cached_runs, precision):
    cfg, job_precision, result = cached_runs(precision)
    tie = 0 if precision == "none" else 1 / 36  # bfloat16: one near-tie among the 36 images may go either way
    history = result["history"]
    transfer = [h for h in history if h["phase"] == "transfer"]
    assert len(transfer) == 6 and [h["phase"] for h in history[6:]] == ["fine_tune"]
    assert transfer[-1]["loss"] < 0.8 * transfer[0]["loss"] and transfer[-1]["val_accuracy"] >= 0.8

    # The checkpoint at the end of the cached phase holds the head it trained, on the untouched backbone.
    phase1 = run_dir.build_model(cfg, 3, job_precision, weights="none")  # computes as the cache was built
    tf.train.Checkpoint(model=phase1).restore(f"{cfg.train.model_dir}/checkpoints/ckpt-36").expect_partial()
    entry = features.read_entry(str(next(pathlib.Path(cfg.train.model_dir, "feature_cache").glob("validation-*"))))
    cached_vectors, cached_labels = next(iter(features.eval_features(entry, cfg).unbatch().batch(1000)))
    real = cached_labels.numpy() >= 0
    images, labels = next(iter(data.make_eval_dataset(cfg.data, 32, "validation").unbatch().batch(1000)))
    np.testing.assert_array_equal(labels.numpy()[real], cached_labels.numpy()[real])
    on_images = phase1(images).numpy()[real]
    on_cache = features.head_model(phase1, "avg")(cached_vectors).numpy()[real]
    np.testing.assert_allclose(on_cache, on_images, rtol=1e-5, atol=PARITY_ATOL[precision])
    accuracy = float(np.mean(on_images.argmax(1) == labels.numpy()[real]))
    assert accuracy == pytest.approx(transfer[-1]["val_accuracy"], abs=tie + 1e-9)

    # Phase 2 and --mode=evaluate work on the full model as without the cache.
    eval_cfg, split = evaluate.prepare(cfg.train.model_dir, split="validation")
    report = evaluate.evaluate(eval_cfg, split, tf.distribute.get_strategy())
    assert report["count"] == 36  # evaluated in float32; training validated in its own precision
    best = max(record["val_accuracy"] for record in history)  # evaluate reads the kept (best validated) weights
    assert report["accuracy"] == pytest.approx(best, abs=tie + 1e-9)


@pytest.mark.slow
def test_cached_and_uncached_runs_with_the_same_seed_reach_comparable_accuracy(tmp_path, color_records, cached_run):
    cached_cfg, cached = cached_run
    plain = train.train(train.prepare(cached_config(color_records, tmp_path / "plain", cache_features=False)))
    # The best validated epoch of each, which is what a run keeps: at this head learning rate (0.1) the
    # uncached run's validation still swings by a whole class between epochs (0.667 <-> 1.0, measured over 6
    # runs; a last epoch of 0.694 was seen once), while its best epoch was 0.97-1.0 in every run.
    cached_accuracy = max(h["val_accuracy"] for h in cached["history"] if h["phase"] == "transfer")
    plain_accuracy = max(h["val_accuracy"] for h in plain["history"])
    assert cached_accuracy >= 0.8 and plain_accuracy >= 0.8 and abs(cached_accuracy - plain_accuracy) <= 0.2
    assert len(plain["history"]) == 6 and plain["step"] == 36  # the same number of steps per epoch


@pytest.mark.slow
def test_augmented_views_are_stored_with_the_centre_crops(tmp_path, color_records):
    cfg = cached_config(color_records, tmp_path / "run", epochs=2, cache_augmented_views=2)
    cfg.augment = dataclasses.replace(cfg.augment, preset="flip", mixup_alpha=0.2)
    history = train.train(train.prepare(cfg))["history"]
    train_entry = features.read_entry(str(next((tmp_path / "run" / "feature_cache").glob("train-*"))))
    assert train_entry.count == 96 + 2 * 96  # ceil(2 * 96 / 16) full batches of views
    labels = np.concatenate([y.numpy() for _, y in features.eval_features(train_entry, cfg)])
    counts = np.bincount(labels[labels >= 0])
    assert counts.sum() == 288 and all(90 <= c <= 102 for c in counts)  # 32 centre crops + about 64 views each
    assert history[-1]["val_accuracy"] > 1 / 3


def test_max_seconds_stops_training_with_a_checkpoint(tmp_path, color_records, tltrain_log):
    cfg = cached_config(color_records, tmp_path / "run", cache_features=False, epochs=50, max_seconds=0.001)
    result = train.train(train.prepare(cfg))
    assert result["step"] == 1 and len(result["history"]) == 1
    assert "--max_seconds=0.001: stopping at step 1" in tltrain_log.read()
    assert run_dir.checkpoint_step(str(tmp_path / "run")) == 1


@pytest.mark.slow
def test_fine_tune_on_cached_activations_trains_the_classifiers_top_layers(tmp_path, color_records, tltrain_log):
    """--cache_fine_tune: phase 2 on stored activations below --fine_tune_at (here with no phase 1) trains the
    classifier's own top blocks and head: --mode=evaluate on images matches the cached validation exactly."""
    cfg = cached_config(color_records, tmp_path / "run", epochs=0, fine_tune_epochs=4, fine_tune_at="block_13",
                        cache_fine_tune=True, fine_tune_learning_rate=1e-3)
    cfg.model = dataclasses.replace(cfg.model, model="mobilenet_v2", alpha=0.35)
    job = train.prepare(cfg)
    keras.utils.set_random_seed(cfg.train.seed)  # the trainer's initial weights
    before = run_dir.build_model(job.cfg, 3, "float32")
    backbone = before.get_layer("backbone")
    from_cut = {layer.name for layer in backbone.layers[models.fine_tune_start(backbone, cfg.model, "block_13"):]}
    history = train.train(job)["history"]
    assert "feature cache: built" in tltrain_log.read()
    cache = {d.name.split("-")[0]: features.read_entry(str(d)) for d in (tmp_path / "run" / "feature_cache").iterdir()}
    assert sorted(cache) == ["train", "validation"] and cache["train"].count == 96
    assert '"cut": "block_12_add"' in (pathlib.Path(cache["train"].directory) / features.MARKER_FILE).read_text()
    # The loss of this random backbone's top blocks is not monotone (float32: 0.79, 0.31, 0.14, 0.25; at 3e-3 it
    # jumped 0.62, 1.22, 0.44, 0.65 and an unlucky order could keep it above the first): it goes well below the
    # first epoch's, not necessarily at the last.
    assert [h["phase"] for h in history] == ["fine_tune"] * 4 and min(h["loss"] for h in history[1:]) < history[0]["loss"]

    trained = run_dir.build_model(cfg, 3, "float32", weights="none")
    tf.train.Checkpoint(model=trained).restore(f"{cfg.train.model_dir}/checkpoints/ckpt-24").expect_partial()
    changed = {w.path.split("/")[-2] for w, b in zip(trained.get_layer("backbone").weights, backbone.weights)
               if not np.array_equal(w, b)}
    assert changed and changed <= from_cut  # only layers from the cut on trained
    eval_cfg, split = evaluate.prepare(cfg.train.model_dir, split="validation")
    report = evaluate.evaluate(eval_cfg, split, tf.distribute.get_strategy())
    assert report["count"] == 36 and report["accuracy"] == pytest.approx(history[-1]["val_accuracy"])

    tltrain_log.read()
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, fine_tune_epochs=5))
    assert len(train.train(train.prepare(longer))["history"]) == 1  # resumed after epoch 4, top layers trained
    assert "feature cache: reusing" in tltrain_log.read()  # the layers below the cut did not change

    bad_cut = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, model_dir=str(tmp_path / "bad"),
                                                                 fine_tune_at="block_14_depthwise"))
    with pytest.raises(ValueError, match="--cache_fine_tune: --fine_tune_at=block_14_depthwise is not a cut"):
        train.train(train.prepare(bad_cut))


@pytest.mark.slow
def test_fine_tune_on_images_validates_on_cached_activations_as_on_images(tmp_path, color_records, tltrain_log):
    """--cache_features without --cache_fine_tune: phase 2 trains on the images, and its validations run the
    classifier from the cut on over the validation split's stored activations, with the accuracy a pass over
    the images gives."""
    cfg = cached_config(color_records, tmp_path / "run", epochs=2, fine_tune_epochs=2, fine_tune_at="block_13",
                        fine_tune_learning_rate=1e-3)
    cfg.model = dataclasses.replace(cfg.model, model="mobilenet_v2", alpha=0.35)
    history = train.train(train.prepare(cfg))["history"]
    assert [h["phase"] for h in history] == ["transfer"] * 2 + ["fine_tune"] * 2
    cache = sorted(d.name.split("-")[0] for d in (tmp_path / "run" / "feature_cache").iterdir())
    assert cache == ["train", "validation", "validation"]  # pooled features, and activations at the cut
    trained = run_dir.build_model(cfg, 3, "float32", weights="none")
    tf.train.Checkpoint(model=trained).restore(f"{cfg.train.model_dir}/checkpoints/ckpt-24").expect_partial()
    images, labels = next(iter(data.make_eval_dataset(cfg.data, 32, "validation").unbatch().batch(1000)))
    real = labels.numpy() >= 0
    accuracy = np.mean(trained(images).numpy()[real].argmax(1) == labels.numpy()[real])
    assert accuracy == pytest.approx(history[-1]["val_accuracy"], abs=1e-9)
