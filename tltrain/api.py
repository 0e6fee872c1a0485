"""The Python API, for notebooks and scripts: what `python -m tltrain.main` does, as functions that return
their results.

    import tltrain

    tltrain.log_to_console()
    model, class_names, history = tltrain.fit("records", "runs/a", epochs=2, fine_tune_epochs=2)
    report = tltrain.evaluate("runs/a")
    tltrain.export("runs/a")
    tltrain.predict("runs/a", ["photo.jpg"])

Settings have the names of the command-line flags (`python -m tltrain.main --helpfull` lists them) and are
checked by the same code; an error names the argument: `top_k=-1: must be >= 1`.

Process-wide state, changed only where said:
- fit's `num_cpu_devices=N` splits the CPU into N logical devices for the whole process; TensorFlow allows
  that once, before anything uses a device.
- fit seeds Python's, NumPy's and TensorFlow's global random generators with `seed` (0 by default), as the
  command line does, so a run is reproducible.
- The Keras dtype policy is never left changed: models are built under the run's precision policy, which is
  restored afterwards (tltrain.run_dir.build_model).
- Nothing is printed unless log_to_console() is called (tltrain.logs).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

from tltrain import config
from tltrain.logs import log_to_console

__all__ = ["fit", "evaluate", "export", "predict", "log_to_console"]

_FLAG = re.compile(r"--(\w+)")
_ARGUMENTS = set(config.settings())


@contextlib.contextmanager
def _errors_name_arguments() -> Iterator[None]:
    """The library's one-line errors name command-line flags (`--top_k=-1: ...`); from Python the same
    settings are arguments, so the message says `top_k=-1: ...`."""
    try:
        yield
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        message = _FLAG.sub(lambda m: m[1] if m[1] in _ARGUMENTS else m[0], str(error))
        raise type(error)(message) from None


def fit(records_dir: str, model_dir: str, **settings) -> tuple:
    """Trains (or resumes) a run in model_dir on the records in records_dir (`records_dir=""` with
    `tfds_name=...` for a TFDS data set). Returns (the trained keras.Model in float32, class names,
    history: one dict per epoch with phase, epoch, step, loss, accuracy, val_accuracy, ...).

    Every setting is checked before anything is built."""
    from tltrain import run_dir, train
    from tltrain import strategy as strategy_lib

    with _errors_name_arguments():
        cfg = config.from_settings(records_dir=records_dir, model_dir=model_dir, **settings)
        strategy_lib.configure_cpu_devices(cfg.strategy.num_cpu_devices)
        job = train.prepare(cfg)
    history = train.train(job)["history"]
    _, model, class_names = run_dir.load_trained(model_dir)
    return model, class_names, history


def evaluate(model_dir: str, records_dir: str = "", eval_split: str = "") -> dict:
    """Evaluates model_dir's latest checkpoint on `eval_split` ("": test when the records have one, else
    validation) of its records (or of records_dir). Returns the report also written to
    model_dir/evaluation.json: accuracy, top5_accuracy, loss, count, per_class, confusion_matrix."""
    from tltrain import evaluate as evaluate_lib
    from tltrain import strategy as strategy_lib

    with _errors_name_arguments():
        config.EvaluateConfig(eval_split=eval_split).validate()
        cfg, split = evaluate_lib.prepare(model_dir, records_dir, eval_split)
    return evaluate_lib.evaluate(cfg, split, strategy_lib.make_strategy(config.StrategyConfig()))


def export(model_dir: str, export_dir: str = "", export_tflite: bool = False) -> dict[str, str]:
    """Exports model_dir's latest checkpoint (SavedModel serving image bytes, model.keras, labels.txt, and
    model.tflite with export_tflite) to export_dir ("": model_dir/export). Returns {what: path}."""
    from tltrain import export as export_lib
    from tltrain import run_dir

    with _errors_name_arguments():
        config.ExportConfig(export_dir=export_dir, export_tflite=export_tflite).validate()
        run_dir.load_config(model_dir)
        run_dir.check_directory("export_dir", export_dir)
    return export_lib.export(model_dir, export_dir, export_tflite)


def predict(model_dir: str, images: str | Sequence[str], top_k: int = 5) -> dict[str, list[tuple[str, float]]]:
    """The top_k (class name, probability) pairs of each image, most likely first, by path; folders are
    expanded to the images in them. model_dir is a trained run or an export directory. A file that cannot be
    read as an image is left out, with a warning line that says why."""
    import numpy as np

    from tltrain import predict as predict_lib

    with _errors_name_arguments():
        config.PredictConfig(top_k=top_k).validate()
        predict_lib.check_model_dir(model_dir)
        paths = predict_lib.image_paths([images] if isinstance(images, str) else list(images))
    probabilities, class_names, failures = predict_lib.predict(model_dir, paths)
    predict_lib.log_failures(failures, len(paths))
    return {path: [(class_names[i], float(row[i])) for i in np.argsort(-row)[:top_k]]
            for path, row in zip(paths, probabilities) if path not in failures}
