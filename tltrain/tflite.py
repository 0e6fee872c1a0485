"""TFLite variants of a trained classifier: float32, float16 weights, and full-integer int8; each takes uint8
RGB pixels [N, H, W, 3] (the evaluation decode's output) and returns float32 probabilities, and carries its
normalization and labels as metadata (tltrain.tflite_metadata).

int8 is post-training quantization calibrated on training images decoded like evaluation. The pixels enter as
uint8 exactly as sent (a Cast, then one Quantize to the calibrated input range); everything after that runs in
int8 until the probabilities are dequantized.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tltrain import data, tflite_metadata
from tltrain.config import DataConfig

VARIANTS = ("float32", "float16", "int8")
SIGNATURE = "serve_pixels"  # the same name as the SavedModel's pixels signature
INPUT, OUTPUT = "images", "probabilities"


def check_variants(variants: Sequence[str]) -> tuple[str, ...]:
    """The variants in the order given, without repeats; ValueError naming the flag for an unknown one."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"--export_tflite={','.join(variants)}: unknown variant {', '.join(unknown)} "
                         f"(choose from {', '.join(VARIANTS)})")
    return tuple(dict.fromkeys(variants))


def file_name(variant: str) -> str:
    return f"model_{variant}.tflite"


def calibration_images(cfg: DataConfig, count: int) -> np.ndarray:
    """The first `count` images of the training split through the evaluation decode, uint8 [n, H, W, 3]. The
    converter writes examples in a seeded random order, so these are a random sample of the classes."""
    batches = data.make_eval_dataset(cfg, cfg.image_size, cfg.train_split)
    examples = batches.unbatch().filter(lambda pixels, label: label >= 0)  # not the padding
    images = examples.map(lambda image, _: image)
    return np.stack(list(images.take(count).as_numpy_iterator()))


def convert(pixels_saved_model: str, variant: str, calibration: np.ndarray | None = None) -> bytes:
    """The .tflite of the SavedModel's pixels signature (uint8 images -> float32 probabilities) as `variant`;
    int8 needs `calibration` images."""
    converter = tf.lite.TFLiteConverter.from_saved_model(pixels_saved_model, signature_keys=[SIGNATURE])
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    return converter.convert()


def write_variants(pixels_saved_model: str, export_dir: str, variants: Sequence[str], class_names: list[str],
                   image_size: int, model_name: str, calibration: np.ndarray | None) -> dict[str, str]:
    """Writes export_dir/model_<variant>.tflite for each variant, with metadata; returns {variant: path}."""
    paths = {}
    for variant in variants:
        metadata = tflite_metadata.model_metadata(
            name=f"{model_name} ({variant})",
            description=f"Image classifier over {len(class_names)} classes, trained with tltrain; {variant} TFLite.",
            class_count=len(class_names), image_size=image_size)
        model = tflite_metadata.with_metadata(convert(pixels_saved_model, variant, calibration), metadata, class_names)
        paths[variant] = posixpath.join(export_dir, file_name(variant))
        with tf.io.gfile.GFile(paths[variant], "wb") as f:
            f.write(model)
    return paths


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter  # LiteRT, the maintained runtime
    except ImportError:  # a platform without a LiteRT wheel (Linux aarch64): TensorFlow's copy of the runtime
        return tf.lite.Interpreter
    return Interpreter


class Classifier:
    """A .tflite in the LiteRT interpreter, single-threaded: pixels in, probabilities out."""

    def __init__(self, model: bytes):
        self.interpreter = _interpreter_class()(model_content=model, num_threads=1)
        self._runner = self.interpreter.get_signature_runner(SIGNATURE)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._runner(**{INPUT: images})[OUTPUT]
