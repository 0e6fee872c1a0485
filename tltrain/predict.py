"""`python -m tltrain.predict --model_dir D img1.jpg img2.png folder/`: top-k classes with names per image.

The latest checkpoint in D is used when there is one (always the freshest weights); otherwise the export
(D/export, or D itself when it is an export directory) through its pixels signature. Both read the files with
data.make_predict_dataset (data.decode_for_eval, the evaluation code), so the probabilities are the ones
evaluation and the bytes serving signature give.
"""

from __future__ import annotations

import posixpath
import sys

import numpy as np
import tensorflow as tf

from tltrain import data, run_dir
from tltrain import export as export_lib
from tltrain.config import RunConfig

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


def predict(model_dir: str, paths: list[str], batch_size: int = 32) -> tuple[np.ndarray, list[str]]:
    """Probabilities [len(paths), classes] and the class names, from the checkpoint or else the export."""
    saved_model_dir = _saved_model_dir(model_dir)
    if saved_model_dir is not None and not _has_checkpoint(model_dir):
        export_dir = posixpath.dirname(saved_model_dir)
        cfg = RunConfig.from_json(run_dir.read_text(posixpath.join(export_dir, run_dir.CONFIG_FILE)))
        class_names = run_dir.read_text(posixpath.join(export_dir, run_dir.LABELS_FILE)).splitlines()
        serve = tf.saved_model.load(saved_model_dir).signatures[export_lib.PIXELS_SIGNATURE]

        def probabilities_of(images):
            return serve(images=images)["probabilities"]
    else:
        cfg, model, class_names = run_dir.load_trained(model_dir)

        def probabilities_of(images):
            return model(images, training=False)
    dataset = data.make_predict_dataset(paths, cfg.data.image_size, cfg.data.eval_crop_fraction, batch_size)
    probabilities = np.concatenate([probabilities_of(images).numpy() for images in dataset])
    return probabilities.astype(np.float32), class_names


def format_top_k(path: str, probabilities: np.ndarray, class_names: list[str], k: int) -> str:
    order = np.argsort(-probabilities)[:k]
    return f"{path}: " + ", ".join(f"{class_names[i]} {probabilities[i]:.3f}" for i in order)


def print_predictions(model_dir: str, arguments: list[str], top_k: int) -> None:
    paths = image_paths(arguments)
    probabilities, class_names = predict(model_dir, paths)
    for path, row in zip(paths, probabilities):
        print(format_top_k(path, row, class_names, top_k))


def run() -> None:
    """Console-script entry point (`tltrain-predict`)."""
    from absl import app, flags

    flags.DEFINE_string("model_dir", "", "a trained model_dir, or an export directory")
    flags.DEFINE_integer("top_k", 5, "classes printed per image")

    def main(argv: list[str]) -> None:
        try:
            if not flags.FLAGS.model_dir:
                raise ValueError("--model_dir: required")
            check_model_dir(flags.FLAGS.model_dir)
            image_paths(argv[1:])
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"tltrain.predict: {e}")
        print_predictions(flags.FLAGS.model_dir, argv[1:], flags.FLAGS.top_k)

    app.run(main)


if __name__ == "__main__":
    run()
