"""--mode=export: a SavedModel that serves encoded image bytes, plus model.keras, labels.txt, TFLite variants
with metadata, and report.json (what each format gives on the evaluation split).

The serving signature includes the preprocessing (data.decode_for_eval, the same code as evaluation, then
the model with its own preprocess_input), so a client sends JPEG/PNG bytes and gets probabilities and class
names back. A second signature, `serve_pixels`, takes uint8 [N,H,W,3]; the TFLite files have the same
signature, returning the probabilities only (their labels are in their metadata).

    python -c "import numpy as np; np.save('in.npy', np.array([open('x.jpg','rb').read()], dtype=object))"
    saved_model_cli run --dir D/export/saved_model --tag_set serve --signature_def serving_default \\
        --inputs image_bytes=in.npy
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import sys
import tempfile
from collections.abc import Sequence

import keras
import tensorflow as tf

import tltrain
from tltrain import data, evaluate, export_report, models, run_dir, tflite

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = tflite.SIGNATURE
CHECK_IMAGES = 500  # unseen images on which int8 must agree with the float model
log = logging.getLogger(__name__)


def _pixels_spec(size: int) -> list[tf.TensorSpec]:
    return [tf.TensorSpec([None, size, size, 3], tf.uint8, name=tflite.INPUT)]


def _write_saved_model(model: keras.Model, class_names: list[str], size: int, crop_fraction: float,
                       path: str) -> None:
    names = tf.constant(class_names)

    def outputs(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = tf.cast(probabilities, tf.float32)
        return {
            tflite.OUTPUT: probabilities,
            "class_names": tf.tile(names[tf.newaxis], [tf.shape(probabilities)[0], 1]),  # aligned with probabilities
            "predicted_class": tf.gather(names, tf.argmax(probabilities, axis=-1)),
        }

    def serve_bytes(image_bytes):
        images = tf.map_fn(lambda encoded: data.decode_for_eval(encoded, size, crop_fraction), image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return outputs(model(images, training=False))

    def serve_pixels(images):
        return outputs(model(images, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, serve_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint(PIXELS_SIGNATURE, serve_pixels, input_signature=_pixels_spec(size))
    archive.write_out(path, verbose=False)


def write_pixels_model(model: keras.Model, size: int, path: str) -> None:
    """A SavedModel with the pixels signature alone, probabilities only: what the TFLite converter reads."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(PIXELS_SIGNATURE,
                         lambda images: {tflite.OUTPUT: tf.cast(model(images, training=False), tf.float32)},
                         input_signature=_pixels_spec(size))
    archive.write_out(path, verbose=False)


def _write_tflite(model: keras.Model, cfg, class_names: list[str], export_dir: str, variants: Sequence[str],
                  quantize_samples: int, max_accuracy_drop: float) -> tuple[dict[str, str], list[str]]:
    """The TFLite variants, converted from a probabilities-only pixels SavedModel (TFLite has no string outputs);
    returns ({variant: path}, the int8 layers kept float). int8 is calibrated on the first quantize_samples
    training images and checked on up to CHECK_IMAGES of the validation split: images the model did not train
    on, whose labels the check does not read (without a validation split: training images past the calibration
    ones). Its top-1 may differ from the float model's on at most the allowed accuracy drop: a changed top-1
    costs at most one right answer, so that bounds the drop on those images."""
    calibration = check = None
    if "int8" in variants:
        if cfg.data.validation_split:
            calibration = tflite.calibration_images(cfg.data, quantize_samples)
            check = tflite.calibration_images(cfg.data, CHECK_IMAGES, cfg.data.validation_split)
        else:
            images = tflite.calibration_images(cfg.data, quantize_samples + CHECK_IMAGES)
            calibration, check = images[:quantize_samples], images[quantize_samples:]
        check = check if len(check) else calibration
    with tempfile.TemporaryDirectory() as pixels_model:
        write_pixels_model(model, cfg.data.image_size, pixels_model)
        return tflite.write_variants(pixels_model, export_dir, variants, class_names, cfg.data.image_size,
                                     cfg.model.model, calibration, check, max_accuracy_drop / 100)


def export(model_dir: str, export_dir: str = "", tflite_variants: Sequence[str] = (), quantize_samples: int = 300,
           max_accuracy_drop: float = 1.0, allow_accuracy_drop: bool = False, eval_split: str = "",
           tta: str = "none") -> dict[str, str]:
    """Writes the export of model_dir's kept model (with tta="flip": averaging each image's and its mirror's
    predictions), prints and writes its report; returns {what: path}.
    AccuracyDropError (after writing everything) when a format loses more than max_accuracy_drop points of
    top-1 against model.keras, unless allow_accuracy_drop."""
    variants = tflite.check_variants(tflite_variants)
    eval_cfg, split = evaluate.prepare(model_dir, split=eval_split)  # records and split checked before any model
    cfg, model, class_names = run_dir.load_trained(model_dir)
    if tta == "flip":
        model = models.with_flip_tta(model)
    export_dir = export_dir or posixpath.join(model_dir, "export")
    paths = {
        "saved_model": posixpath.join(export_dir, SAVED_MODEL_DIR),
        "keras": posixpath.join(export_dir, KERAS_FILE),
        "labels": posixpath.join(export_dir, run_dir.LABELS_FILE),
    }
    _write_saved_model(model, class_names, cfg.data.image_size, cfg.data.eval_crop_fraction, paths["saved_model"])
    model.save(paths["keras"])
    run_dir.write_run_files(export_dir, cfg, class_names)  # labels.txt, and config.json for predict
    tflite_paths, kept_float = (_write_tflite(model, cfg, class_names, export_dir, variants, quantize_samples,
                                              max_accuracy_drop) if variants else ({}, []))
    paths.update({f"tflite_{variant}": path for variant, path in tflite_paths.items()})

    rows, count = export_report.measure(eval_cfg.data, split, paths["keras"], paths["saved_model"], tflite_paths)
    paths["report"] = posixpath.join(export_dir, export_report.REPORT_FILE)
    report = {"split": split, "count": count, "max_accuracy_drop": max_accuracy_drop,
              "quantize_samples": quantize_samples if "int8" in variants else 0, "int8_float_layers": kept_float,
              "formats": [dataclasses.asdict(row) for row in rows]}
    run_dir.write_text(paths["report"], json.dumps(report, indent=2) + "\n")
    log.info(export_report.table(rows, split, count))
    drops = export_report.accuracy_drops(rows, max_accuracy_drop)
    if drops and not allow_accuracy_drop:
        raise export_report.AccuracyDropError("export rejected: " + "; ".join(drops))
    return paths


sys.modules[__name__].__class__ = tltrain.ApiModule  # tltrain.export(...) calls tltrain.api.export(...)
