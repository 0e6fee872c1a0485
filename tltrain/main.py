"""`python -m tltrain.main`: absl flags named exactly like the RunConfig fields -> RunConfig -> run.

The flags are generated from the config dataclasses (type, choices, default and help come from each field's
declaration), so a new config field is a new flag with no second list to keep in step. `--augment` is
AugmentConfig.preset and `--seed` seeds everything (train, data shuffling, augmentation).
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags

from tltrain import config as config_lib
from tltrain import fields, logs

log = logging.getLogger("tltrain.main")  # not __name__, which is __main__ under `python -m`
MODES = ("train", "evaluate", "export", "predict")
SETTINGS = config_lib.settings()

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "train", MODES, "train | evaluate | export | predict (files or folders as arguments)")
for _name, _setting in SETTINGS.items():
    fields.define_flag(_name, _setting.field, _setting.hint)


def config_from_flags() -> config_lib.RunConfig:
    """The RunConfig the parsed flags describe, validated: ValueError naming the flag for a malformed list
    or a value its field does not allow."""
    return config_lib.from_settings(**{name: fields.from_flag(name, setting.hint, FLAGS[name].value)
                                       for name, setting in SETTINGS.items()})


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a flag error as one line (absl's own handler prints two)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"tltrain: {e}")


def main(argv: list[str]) -> None:
    logs.show_on_console()
    if FLAGS.model == "list":
        from tltrain import models

        log.info(models.describe_models())
        return
    from tltrain import evaluate, export, predict, run_dir, train
    from tltrain.errors import RunError
    from tltrain import strategy as strategy_lib

    mode, files = FLAGS.mode, argv[1:]
    try:  # every check that needs no model: a bad flag is one line, before anything is built
        cfg = config_from_flags()
        if files and mode != "predict":
            raise ValueError(f"unexpected arguments {' '.join(files)}: only --mode=predict takes image files")
        model_dir = cfg.train.model_dir
        if not model_dir:
            raise ValueError("--model_dir: required (where checkpoints, summaries and exports go)")
        if mode in ("train", "evaluate"):  # logical CPU devices: process-wide, before TensorFlow uses a device
            strategy_lib.configure_cpu_devices(cfg.strategy.num_cpu_devices)
        if mode == "train":
            job = train.prepare(cfg)
        elif mode == "evaluate":
            eval_cfg, split = evaluate.prepare(model_dir, cfg.data.records_dir, cfg.evaluate.eval_split)
            strategy = strategy_lib.make_strategy(cfg.strategy)
        elif mode == "export":
            run_dir.load_config(model_dir)  # a trained model_dir
            run_dir.check_directory("export_dir", cfg.export.export_dir)
        else:
            predict.check_model_dir(model_dir)
            predict.image_paths(files)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"tltrain: {e}")
    except Exception as e:  # the records' first shard read (record sizes) found damaged
        _exit_if_records_damaged(e, FLAGS.records_dir)
    try:
        if mode == "train":
            train.train(job)
        elif mode == "evaluate":
            report = evaluate.evaluate(eval_cfg, split, strategy)
            log.info(f"{split}: accuracy {report['accuracy']:.4f}, top5 {report['top5_accuracy']:.4f}, "
                     f"loss {report['loss']:.4f} over {report['count']} images; report in {model_dir}")
        elif mode == "export":
            for what, path in export.export(model_dir, cfg.export.export_dir, cfg.export.export_tflite).items():
                log.info(f"{what}: {path}")
        elif predict.print_predictions(model_dir, files, cfg.predict.top_k):
            sys.exit(1)  # some files could not be predicted; each has its line
    except RunError as e:
        sys.exit(f"tltrain: {e}")
    except Exception as e:  # a shard found cut short or corrupted while reading it: one line naming it
        _exit_if_records_damaged(e, (eval_cfg if mode == "evaluate" else cfg).data.records_dir)


def _exit_if_records_damaged(error: Exception, records_dir: str) -> None:
    """TensorFlow's read errors name no file: exits with the line naming the damaged shards of records_dir;
    re-raises `error` when it is another one."""
    from tltrain.dataset_metadata import DatasetMetadata

    line = records_dir and DatasetMetadata.read(records_dir).read_failure(error)
    if not line:
        raise error
    sys.exit(f"tltrain: {line}")


def run() -> None:
    """Console-script entry point (`tltrain`)."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
