"""--mode=export: a SavedModel that serves encoded image bytes, plus model.keras, labels.txt and TFLite.

The serving signature includes the preprocessing (data.decode_for_eval, the same code as evaluation, then
the model with its own preprocess_input), so a client sends JPEG/PNG bytes and gets probabilities and class
names back. A second signature, `serve_pixels`, takes uint8 [N,H,W,3] and is what TFLite is made from
(TFLite has no image decoder).

    python -c "import numpy as np; np.save('in.npy', np.array([open('x.jpg','rb').read()], dtype=object))"
    saved_model_cli run --dir D/export/saved_model --tag_set serve --signature_def serving_default \\
        --inputs image_bytes=in.npy
"""

from __future__ import annotations

import posixpath
import sys

import keras
import tensorflow as tf

import tltrain
from tltrain import data, run_dir

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serve_pixels"


def export(model_dir: str, export_dir: str = "", tflite: bool = False) -> dict[str, str]:
    """Writes the export of model_dir's latest checkpoint; returns {what: path}."""
    cfg, model, class_names = run_dir.load_trained(model_dir)
    export_dir = export_dir or posixpath.join(model_dir, "export")
    size, crop_fraction = cfg.data.image_size, cfg.data.eval_crop_fraction
    names = tf.constant(class_names)

    def outputs(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = tf.cast(probabilities, tf.float32)
        return {
            "probabilities": probabilities,
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
    archive.add_endpoint(PIXELS_SIGNATURE, serve_pixels,
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    paths = {
        "saved_model": posixpath.join(export_dir, SAVED_MODEL_DIR),
        "keras": posixpath.join(export_dir, KERAS_FILE),
        "labels": posixpath.join(export_dir, run_dir.LABELS_FILE),
    }
    archive.write_out(paths["saved_model"], verbose=False)
    model.save(paths["keras"])
    run_dir.write_run_files(export_dir, cfg, class_names)  # labels.txt, and config.json for predict
    if tflite:
        paths["tflite"] = posixpath.join(export_dir, TFLITE_FILE)
        converter = tf.lite.TFLiteConverter.from_saved_model(paths["saved_model"], signature_keys=[PIXELS_SIGNATURE])
        with tf.io.gfile.GFile(paths["tflite"], "wb") as f:
            f.write(converter.convert())
    return paths


sys.modules[__name__].__class__ = tltrain.ApiModule  # tltrain.export(...) calls tltrain.api.export(...)
