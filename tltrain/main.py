"""`python -m tltrain.main`: absl flags named exactly like the RunConfig fields -> RunConfig -> run.

The flags are generated from the config dataclasses (their trailing comments become the help), so a new
config field is a new flag with no second list to keep in step. `--augment` is AugmentConfig.preset and
`--seed` seeds everything (train, data shuffling, augmentation).
"""

from __future__ import annotations

import os

# Before TensorFlow is imported anywhere: oneDNN is off by default on some CPUs and was measured 10-48%
# faster here; the C++ log noise helps nobody at the console.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import typing  # noqa: E402

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from tltrain import config as config_lib  # noqa: E402

MODES = ("train", "evaluate", "export", "predict")
SECTIONS = (  # train first: its `seed` (an int, default 0) defines the one --seed flag
    ("train", config_lib.TrainConfig),
    ("data", config_lib.DataConfig),
    ("augment", config_lib.AugmentConfig),
    ("model", config_lib.ModelConfig),
    ("strategy", config_lib.StrategyConfig),
)
# Fields whose flag is not their own name.
FLAG_NAME = {("augment", "preset"): "augment"}
# Flags with a closed set of values, checked by absl while parsing.
CHOICES = {
    "augment": ("none", "flip", "seed_recipe"),
    "pooling": ("avg", "max", "flatten"),
    "freeze": ("backbone", "none"),
    "optimizer": ("adam", "sgd", "rmsprop"),
    "schedule": ("cosine", "step", "constant"),
    "class_weight": ("none", "balanced"),
    "mixed_precision": ("auto", "float16", "bfloat16", "none"),
    "scale_learning_rate": ("none", "linear"),
    "strategy": ("default", "one_device", "mirrored", "multi_worker", "tpu"),
}

# Help for fields without a trailing comment in config.py.
HELP = {
    "seed": "seeds the run: weight initialisation, data shuffling and augmentation",
    "profile_steps": "A,B: a profiler trace of global steps [A, B) in model_dir/train",
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "train", MODES, "train | evaluate | export | predict (files or folders as arguments)")


def _field_help(cls) -> dict[str, str]:
    """The trailing `# comment` of each field in the dataclass source."""
    pattern = re.compile(r"^\s+(\w+):[^#]*#\s*(.*)$")
    return {m.group(1): m.group(2) for m in map(pattern.match, inspect.getsource(cls).splitlines()) if m}


def _tuple_args(hint) -> tuple | None:
    """The arguments of a tuple field's type (also inside `| None`); None for a scalar field."""
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) is tuple:
            return typing.get_args(candidate)
    return None


def _scalar_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _define_flags() -> list[tuple[str, str, str, typing.Any]]:
    """Defines one flag per config field; returns (section, field, flag name, type hint) for each field."""
    fields = []
    for section, cls in SECTIONS:
        hints = typing.get_type_hints(cls)
        helps = _field_help(cls)
        for field in dataclasses.fields(cls):
            name = FLAG_NAME.get((section, field.name), field.name)
            hint = hints[field.name]
            fields.append((section, field.name, name, hint))
            if name in FLAGS:  # --seed: one flag for every section's seed
                continue
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            help_text = helps.get(field.name) or HELP.get(name) or f"{section}.{field.name}"
            if _tuple_args(hint) is not None:
                flags.DEFINE_list(name, None if default is None else [str(v) for v in default], help_text)
            elif name in CHOICES:
                flags.DEFINE_enum(name, default, CHOICES[name], help_text)
            elif _scalar_type(hint) is bool:
                flags.DEFINE_boolean(name, default, help_text)
            elif _scalar_type(hint) is int:
                flags.DEFINE_integer(name, default, help_text)
            elif _scalar_type(hint) is float:
                flags.DEFINE_float(name, default, help_text)
            else:
                flags.DEFINE_string(name, default, help_text)
    return fields


FIELDS = _define_flags()


def config_from_flags() -> config_lib.RunConfig:
    """The RunConfig the parsed flags describe; ValueError naming the flag for a malformed list."""
    sections: dict[str, dict] = {section: {} for section, _ in SECTIONS}
    for section, field, name, hint in FIELDS:
        value = FLAGS[name].value
        args = _tuple_args(hint)
        if args is not None and value is not None:
            try:
                value = tuple(args[0](v) for v in value)
            except ValueError as e:
                raise ValueError(f"--{name}={','.join(FLAGS[name].value)}: not a list of {args[0].__name__}") from e
            if Ellipsis not in args and len(value) != len(args):
                raise ValueError(f"--{name}: needs {len(args)} comma-separated values, got {len(value)}")
        sections[section][field] = value
    return config_lib.RunConfig(
        data=config_lib.DataConfig(**sections["data"]),
        augment=config_lib.AugmentConfig(**sections["augment"]),
        model=config_lib.ModelConfig(**sections["model"]),
        train=config_lib.TrainConfig(**sections["train"]),
        strategy=config_lib.StrategyConfig(**sections["strategy"]),
    )


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a flag error as one line (absl's own handler prints two)."""
    bare = {"--export_tflite", "-export_tflite"}  # a list flag needs a value; bare, it keeps its old meaning
    argv = ["--export_tflite=float32" if arg in bare else arg for arg in argv]
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"tltrain: {e}")


def _only_tltrain_info(record: logging.LogRecord) -> bool:
    """TensorFlow's and Keras's INFO lines (savers, collectives, ...) would drown the per-epoch lines."""
    return record.levelno >= logging.WARNING or f"{os.sep}tltrain{os.sep}" in record.pathname


def main(argv: list[str]) -> None:
    absl_logging.get_absl_handler().addFilter(_only_tltrain_info)
    if FLAGS.model == "list":
        from tltrain import models

        print(models.describe_models())
        return
    from tltrain import evaluate, export, export_report, predict, run_dir, tflite, train
    from tltrain import strategy as strategy_lib

    mode, files = FLAGS.mode, argv[1:]
    try:  # every check that needs no model: a bad flag is one line, before anything is built
        cfg = config_from_flags()
        if files and mode != "predict":
            raise ValueError(f"unexpected arguments {' '.join(files)}: only --mode=predict takes image files")
        model_dir = cfg.train.model_dir
        if not model_dir:
            raise ValueError("--model_dir: required (where checkpoints, summaries and exports go)")
        if mode == "train":
            job = train.prepare(cfg)
        elif mode == "evaluate":
            strategy_lib.configure_cpu_devices(cfg.strategy.num_cpu_devices)
            eval_cfg, split = evaluate.prepare(model_dir, cfg.data.records_dir, cfg.train.eval_split)
            strategy = strategy_lib.make_strategy(cfg.strategy)
        elif mode == "export":
            run_dir.load_config(model_dir)  # a trained model_dir
            tflite.check_variants(cfg.train.export_tflite)
            evaluate.prepare(model_dir, split=cfg.train.eval_split)  # the report's records and split
            if "int8" in cfg.train.export_tflite and cfg.train.quantize_samples < 1:
                raise ValueError(f"--quantize_samples={cfg.train.quantize_samples}: int8 needs at least 1")
        else:
            predict.check_model_dir(model_dir)
            predict.image_paths(files)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"tltrain: {e}")
    if mode == "train":
        train.train(job)
    elif mode == "evaluate":
        report = evaluate.evaluate(eval_cfg, split, strategy)
        print(f"{split}: accuracy {report['accuracy']:.4f}, top5 {report['top5_accuracy']:.4f}, "
              f"loss {report['loss']:.4f} over {report['count']} images; report in {model_dir}")
    elif mode == "export":
        try:
            paths = export.export(model_dir, cfg.train.export_dir, cfg.train.export_tflite, cfg.train.quantize_samples,
                                  cfg.train.max_accuracy_drop, cfg.train.allow_accuracy_drop, cfg.train.eval_split)
        except export_report.AccuracyDropError as e:
            sys.exit(f"tltrain: export rejected: {e}")
        for what, path in paths.items():
            print(f"{what}: {path}")
    else:
        predict.print_predictions(model_dir, files, cfg.train.top_k)


def run() -> None:
    """Console-script entry point (`tltrain`)."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
