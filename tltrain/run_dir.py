"""The layout of a model_dir and how a trained model comes back out of it.

model_dir/config.json   the RunConfig (image size and class count resolved): a resumed run must match it
model_dir/labels.txt    class names, one a line, index order
model_dir/checkpoints/  tf.train.CheckpointManager checkpoints (model, optimizers, progress)
model_dir/train, validation, evaluation/  TensorBoard runs;  model_dir/export/  SavedModel, .keras, TFLite
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

import keras
import tensorflow as tf

from tltrain import checkpoints, models
from tltrain.config import RunConfig

CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"
CHECKPOINT_DIR = "checkpoints"
# Config fields a resumed run must share with the run that wrote model_dir (the weights depend on them).
MODEL_IDENTITY = ("model", "alpha", "feature_layer", "pooling", "head_units")


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist (local or gs://)."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def read_config(path: str) -> RunConfig | None:
    """The RunConfig saved at `path`, None when there is none; one-line ValueError naming a corrupt file."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return RunConfig.from_json(text)
    except (ValueError, TypeError, AttributeError) as error:  # not JSON, or not a config's shape
        reason = " ".join(str(error).split())[:200]
        raise ValueError(f"{path}: not a tltrain config ({reason}); restore it or use another --model_dir") from None


def check_directory(flag: str, path: str) -> None:
    """A path that must be a directory (or not exist yet) but is a file: one-line ValueError naming the flag."""
    if path and tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        raise ValueError(f"--{flag}={path}: is a file; it must be a directory (or not exist yet)")


def write_text(path: str, text: str) -> None:
    tf.io.gfile.makedirs(posixpath.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def write_run_files(directory: str, cfg: RunConfig, class_names: list[str], plan: dict | None = None) -> None:
    """config.json (with the automatic plan's record under "plan", when there is one) and labels.txt into a
    model_dir (or an export, which predict reads the same way)."""
    text = cfg.to_json()
    if plan:
        text = json.dumps({**json.loads(text), "plan": plan}, indent=2, sort_keys=True)
    write_text(posixpath.join(directory, CONFIG_FILE), text + "\n")
    write_text(posixpath.join(directory, LABELS_FILE), "".join(f"{name}\n" for name in class_names))


def check_resume_compatible(cfg: RunConfig, class_names: list[str]) -> None:
    """A model_dir written by another job (other model, classes or image size) is a one-line ValueError."""
    model_dir = cfg.train.model_dir
    saved = read_config(posixpath.join(model_dir, CONFIG_FILE))
    if saved is None:
        return
    differences = [
        (name, getattr(saved.model, name), getattr(cfg.model, name))
        for name in MODEL_IDENTITY
        if getattr(saved.model, name) != getattr(cfg.model, name)
    ]
    if saved.data.image_size != cfg.data.image_size:
        differences.append(("image_size", saved.data.image_size, cfg.data.image_size))
    saved_labels = read_text(posixpath.join(model_dir, LABELS_FILE))
    if saved_labels is not None and saved_labels.splitlines() != class_names:
        differences.append(("classes", ",".join(saved_labels.splitlines()), ",".join(class_names)))
    if differences:
        name, old, new = differences[0]
        raise ValueError(
            f"--model_dir={model_dir}: holds a run with {name}={old}, this one has {name}={new}; "
            "use another --model_dir or the same settings"
        )


def build_model(cfg: RunConfig, num_classes: int, precision: str, weights: str | None = None) -> keras.Model:
    """The classifier under the dtype policy `precision` (in the current strategy scope); the global policy is
    restored afterwards so nothing else inherits it. `weights` overrides cfg.model.weights."""
    model_cfg = cfg.model if weights is None else dataclasses.replace(cfg.model, weights=weights)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        return models.build_classifier(model_cfg, num_classes, cfg.data.image_size)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def latest_checkpoint(model_dir: str) -> str:
    """The newest checkpoint's path; FileNotFoundError with one line when model_dir has none."""
    path = tf.train.latest_checkpoint(posixpath.join(model_dir, CHECKPOINT_DIR))
    if path is None:
        raise FileNotFoundError(f"--model_dir={model_dir}: no checkpoint in {CHECKPOINT_DIR}/; train a model there first")
    return path


def checkpoint_step(model_dir: str) -> int:
    """The global step of the newest checkpoint (checkpoints are numbered by it)."""
    return int(latest_checkpoint(model_dir).rsplit("-", 1)[1])


def load_config(model_dir: str) -> tuple[RunConfig, list[str]]:
    """The saved config and class names of a trained model_dir; FileNotFoundError with one line when it has
    no config, labels or checkpoint (checked before anything is built)."""
    check_directory("model_dir", model_dir)
    cfg = read_config(posixpath.join(model_dir, CONFIG_FILE))
    labels_text = read_text(posixpath.join(model_dir, LABELS_FILE))
    if cfg is None or labels_text is None:
        raise FileNotFoundError(f"--model_dir={model_dir}: no {CONFIG_FILE}/{LABELS_FILE}; train a model there first")
    latest_checkpoint(model_dir)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, model_dir=model_dir))  # it may have moved
    return cfg, labels_text.splitlines()


def load_trained(model_dir: str, precision: str = "float32") -> tuple[RunConfig, keras.Model, list[str]]:
    """The config, the model holding the kept weights (tltrain.keep: the best validated ones; for a run from
    before they were kept, the newest readable checkpoint's), and the class names of a trained model_dir (for
    evaluate, export and predict)."""
    from tltrain import keep

    cfg, class_names = load_config(model_dir)
    model = build_model(cfg, len(class_names), precision, weights="none")
    checkpoint = tf.train.Checkpoint(model=model)
    if not checkpoints.restore_newest(checkpoint, posixpath.join(model_dir, keep.BEST_DIR), partial=True):
        checkpoints.restore_newest(checkpoint, posixpath.join(model_dir, CHECKPOINT_DIR), partial=True)
    return cfg, model, class_names
