"""`python -m tltrain.predict --model_dir D img1.jpg img2.png folder/`: top-k classes with names per image.

The latest checkpoint in D is used when there is one (always the freshest weights); otherwise the export
(D/export, or D itself when it is an export directory) through its pixels signature. Both read the files with
data.make_predict_dataset (data.decode_for_eval, the evaluation code), so the probabilities are the ones
evaluation and the bytes serving signature give.
"""

from __future__ import annotations

import logging
import posixpath
import sys

import numpy as np
import tensorflow as tf

import tltrain
from tltrain import data, logs, run_dir
from tltrain import export as export_lib
from tltrain.config import PredictConfig, RunConfig
from tltrain.errors import RunError

log = logging.getLogger("tltrain.predict")  # not __name__, which is __main__ under `python -m`
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def image_paths(arguments: list[str]) -> list[str]:
    """Files as given, folders expanded (recursively, sorted) to their images; one-line error for a path that
    does not exist or a folder without images."""
    if not arguments:
        raise ValueError("no images given: pass image files or folders after the flags")
    paths = []
    for argument in arguments:
        if tf.io.gfile.isdir(argument):
            found = sorted(
                posixpath.join(root, name)
                for root, _, names in tf.io.gfile.walk(argument)
                for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise FileNotFoundError(f"{argument}: no {'/'.join(IMAGE_EXTENSIONS)} files in this folder")
            paths += found
        elif tf.io.gfile.exists(argument):
            paths.append(argument)
        else:
            raise FileNotFoundError(f"{argument}: no such file or folder")
    return paths


def _saved_model_dir(model_dir: str) -> str | None:
    for candidate in (posixpath.join(model_dir, "export", export_lib.SAVED_MODEL_DIR),
                      posixpath.join(model_dir, export_lib.SAVED_MODEL_DIR)):
        if tf.io.gfile.exists(posixpath.join(candidate, "saved_model.pb")):
            return candidate
    return None


def check_model_dir(model_dir: str) -> None:
    """One-line error when model_dir has neither a trained checkpoint nor an export."""
    if _saved_model_dir(model_dir) is None or _has_checkpoint(model_dir):
        run_dir.load_config(model_dir)


def _has_checkpoint(model_dir: str) -> bool:
    return tf.train.latest_checkpoint(posixpath.join(model_dir, run_dir.CHECKPOINT_DIR)) is not None


def predict(model_dir: str, paths: list[str], batch_size: int = 32) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Probabilities [len(paths), classes] from the checkpoint or else the export, the class names, and
    {path: reason} for the files that could not be read or decoded (their rows are NaN)."""
    saved_model_dir = _saved_model_dir(model_dir)
    if saved_model_dir is not None and not _has_checkpoint(model_dir):
        export_dir = posixpath.dirname(saved_model_dir)
        cfg = run_dir.read_config(posixpath.join(export_dir, run_dir.CONFIG_FILE))
        class_names = run_dir.read_text(posixpath.join(export_dir, run_dir.LABELS_FILE)).splitlines()
        serve = tf.saved_model.load(saved_model_dir).signatures[export_lib.PIXELS_SIGNATURE]

        def probabilities_of(images):
            return serve(images=images)["probabilities"]
    else:
        cfg, model, class_names = run_dir.load_trained(model_dir)

        def probabilities_of(images):
            return model(images, training=False)
    probabilities = np.full([len(paths), len(class_names)], np.nan, np.float32)
    done = np.zeros(len(paths), bool)
    for indices, images in data.make_predict_dataset(paths, cfg.data.image_size, cfg.data.eval_crop_fraction,
                                                     batch_size):
        probabilities[indices.numpy()] = probabilities_of(images).numpy()
        done[indices.numpy()] = True
    failures = {paths[i]: data.predict_failure(paths[i], cfg.data.image_size, cfg.data.eval_crop_fraction)
                for i in np.flatnonzero(~done)}
    return probabilities, class_names, failures


def format_top_k(path: str, probabilities: np.ndarray, class_names: list[str], k: int) -> str:
    order = np.argsort(-probabilities)[:k]
    return f"{path}: " + ", ".join(f"{class_names[i]} {probabilities[i]:.3f}" for i in order)


def print_predictions(model_dir: str, arguments: list[str], top_k: int) -> int:
    """Logs the top-k line of every file that decodes, and a warning line per file that does not (on stderr at
    the console); returns how many did not."""
    paths = image_paths(arguments)
    probabilities, class_names, failures = predict(model_dir, paths)
    for path, row in zip(paths, probabilities):
        if path not in failures:
            log.info(format_top_k(path, row, class_names, top_k))
    log_failures(failures, len(paths))
    return len(failures)


def log_failures(failures: dict[str, str], total: int) -> None:
    """A warning line per file that could not be predicted, with its reason, then how many of `total`."""
    for path, reason in failures.items():
        log.warning(f"{path}: not predicted: {reason}")
    if failures:
        log.warning(f"{len(failures)} of {total} files could not be predicted")


def run() -> None:
    """Console-script entry point (`tltrain-predict`)."""
    from absl import app, flags

    flags.DEFINE_string("model_dir", "", "a trained model_dir, or an export directory")
    top_k = PredictConfig.__dataclass_fields__["top_k"]
    flags.DEFINE_integer("top_k", top_k.default, top_k.metadata["help"])

    def main(argv: list[str]) -> None:
        logs.show_on_console()
        try:
            PredictConfig(top_k=flags.FLAGS.top_k).validate()
            if not flags.FLAGS.model_dir:
                raise ValueError("--model_dir: required")
            check_model_dir(flags.FLAGS.model_dir)
            image_paths(argv[1:])
            failed = print_predictions(flags.FLAGS.model_dir, argv[1:], flags.FLAGS.top_k)
        except (ValueError, FileNotFoundError, RunError) as e:
            sys.exit(f"tltrain.predict: {e}")
        if failed:
            sys.exit(1)

    app.run(main)


sys.modules[__name__].__class__ = tltrain.ApiModule  # tltrain.predict(...) calls tltrain.api.predict(...)


if __name__ == "__main__":
    run()

