"""TFLite variants of a trained classifier: float32, float16 weights, and full-integer int8; each takes uint8
RGB pixels [N, H, W, 3] (the evaluation decode's output) and returns float32 probabilities, and carries its
normalization and labels as metadata (tltrain.tflite_metadata).

int8 is post-training quantization calibrated on training images decoded like evaluation. The pixels enter as
uint8 exactly as sent (a Cast, then one Quantize to the calibrated input range); everything after that runs in
int8 until the probabilities are dequantized. Some networks lose accuracy in a few layers (MobileNetV2's first
depthwise convolutions, whose per-channel ranges differ by orders of magnitude): the int8 model is checked
against the float one on images it was not trained on (a model that has memorised its training images keeps
their top-1 class under quantization noise, so they show nothing), and when their top-1 classes disagree on
more than the allowed share, the layers with the largest quantization error (TFLite's QuantizationDebugger)
stay float, as few as make them agree.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tltrain import data, tflite_metadata
from tltrain.config import DataConfig

VARIANTS = ("float32", "float16", "int8")
SIGNATURE = "serve_pixels"  # the same name as the SavedModel's pixels signature
INPUT, OUTPUT = "images", "probabilities"
DEBUG_IMAGES = 32  # images the QuantizationDebugger runs to rank the layers by their quantization error
log = logging.getLogger(__name__)


def check_variants(variants: Sequence[str]) -> tuple[str, ...]:
    """The variants in the order given, without repeats; ValueError naming the flag for an unknown one."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"--export_tflite={','.join(variants)}: unknown variant {', '.join(unknown)} "
                         f"(choose from {', '.join(VARIANTS)})")
    return tuple(dict.fromkeys(variants))


def file_name(variant: str) -> str:
    return f"model_{variant}.tflite"


def calibration_images(cfg: DataConfig, count: int, split: str = "") -> np.ndarray:
    """The first `count` images of `split` (default: the training split) through the evaluation decode, uint8
    [n, H, W, 3]. The converter writes examples in a seeded random order, so these are a random sample of the
    classes."""
    batches = data.make_eval_dataset(cfg, cfg.image_size, split or cfg.train_split)
    examples = batches.unbatch().filter(lambda pixels, label: label >= 0)  # not the padding
    images = examples.map(lambda image, _: image)
    return np.stack(list(images.take(count).as_numpy_iterator()))


def _converter(pixels_saved_model: str, variant: str, calibration: np.ndarray | None = None):
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
    return converter


def convert(pixels_saved_model: str, variant: str, calibration: np.ndarray | None = None) -> bytes:
    """The .tflite of the SavedModel's pixels signature (uint8 images -> float32 probabilities) as `variant`;
    int8 needs `calibration` images."""
    return _converter(pixels_saved_model, variant, calibration).convert()


def disagreement(model: bytes, images: np.ndarray, reference: np.ndarray) -> float:
    """The share of `images` whose top-1 class under `model` differs from `reference` (top-1 classes)."""
    return float(np.mean(Classifier(model)(images).argmax(-1) != reference)) if len(images) else 0.0


def quantize_int8(pixels_saved_model: str, calibration: np.ndarray, check: np.ndarray,
                  max_disagreement: float) -> tuple[bytes, list[str]]:
    """(the int8 .tflite, the layers kept float). Full-integer first; when its top-1 disagrees with the float
    model's on more than `max_disagreement` of the `check` images, the layers are ranked by the debugger's
    error (RMSE in units of the layer's quantization step) and kept float worst first, 1, 2, 4, ... of them,
    until the model agrees (int8 ops with a float fallback where kept; input and output as the full model)."""
    model = convert(pixels_saved_model, "int8", calibration)
    reference = Classifier(convert(pixels_saved_model, "float32"))(check).argmax(-1) if len(check) else check
    if disagreement(model, check, reference) <= max_disagreement:
        return model, []
    converter = _converter(pixels_saved_model, "int8", calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    with warnings.catch_warnings():  # the debugger runs TensorFlow's own (deprecated) interpreter
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([image[np.newaxis]] for image in check[:DEBUG_IMAGES]))
        debugger.run()
        ranked = _layers_by_error(debugger)
        kept, count = [], 1
        while count <= len(ranked):
            kept = ranked[:count]
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=kept)
            model = debugger.get_nondebug_quantized_model()
            share = disagreement(model, check, reference)
            log.info(f"int8: {len(kept)} layer(s) kept float, top-1 disagrees with float32 on {share:.1%} of "
                     f"{len(check)} check images")
            if share <= max_disagreement:
                break
            count = count * 2 if count < len(ranked) else len(ranked) + 1
        return model, kept


def _layers_by_error(debugger) -> list[str]:
    """The debugged layers' output tensor names, largest RMSE / quantization step first."""
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = list(csv.DictReader(io.StringIO(dump.getvalue())))
    error = {row["tensor_name"]: float(row["mean_squared_error"]) ** 0.5 / float(row["scale"]) for row in rows}
    return sorted(error, key=error.get, reverse=True)


def write_variants(pixels_saved_model: str, export_dir: str, variants: Sequence[str], class_names: list[str],
                   image_size: int, model_name: str, calibration: np.ndarray | None = None,
                   check: np.ndarray | None = None, max_disagreement: float = 0.01) -> tuple[dict[str, str], list[str]]:
    """Writes export_dir/model_<variant>.tflite for each variant, with metadata; returns ({variant: path}, the
    int8 model's layers kept float)."""
    paths, kept_float = {}, []
    for variant in variants:
        metadata = tflite_metadata.model_metadata(
            name=f"{model_name} ({variant})",
            description=f"Image classifier over {len(class_names)} classes, trained with tltrain; {variant} TFLite.",
            class_count=len(class_names), image_size=image_size)
        if variant == "int8":
            model, kept_float = quantize_int8(pixels_saved_model, calibration, check, max_disagreement)
        else:
            model = convert(pixels_saved_model, variant)
        model = tflite_metadata.with_metadata(model, metadata, class_names)
        paths[variant] = posixpath.join(export_dir, file_name(variant))
        with tf.io.gfile.GFile(paths[variant], "wb") as f:
            f.write(model)
    return paths, kept_float


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
