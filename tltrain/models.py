"""Backbones and the classifier built on them.

One registry entry per `keras.applications` family says how to construct it, what image size it wants, how its
pixels are preprocessed, and where its fine-tuning blocks start. `build_classifier` puts the family's own
`preprocess_input` inside the model (so the host ships uint8 and exports carry their preprocessing), loads
weights from ImageNet, nothing, or any Keras file holding the same backbone (tltrain.weights), and adds the head. `set_phase`
decides what trains: a frozen backbone keeps its BatchNorm statistics because a non-trainable Keras 3
BatchNormalization always runs in inference mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator

import keras
from keras import layers

from tltrain import weights as weights_lib
from tltrain.config import ModelConfig

# keras.applications downloads ImageNet weights with this module's get_file (into keras_home()/models); we wrap
# it to name the file when that fails offline.
from keras.src.backend import config as _keras_config  # isort: skip
from keras.src.utils import file_utils as _keras_file_utils  # isort: skip

log = logging.getLogger(__name__)
A = keras.applications
TRAINING_PHASES = ("transfer", "fine_tune", "full")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What tltrain needs to know about one backbone family beyond its keras.applications constructor."""

    constructor: Callable[..., keras.Model]  # keras.applications-style: include_top, weights, input_shape (+ alpha)
    preprocess: Callable  # the family's own preprocess_input: pixels in [0, 255] -> backbone input
    scaling: str  # what `preprocess` does, for --model=list
    default_size: int
    min_size: int
    fine_tune_at: str  # default first trainable block of phase 2
    block_pattern: str  # regex over layer names; group 1 is the block a layer marks
    blocks_hint: str  # the block names, for --model=list and errors
    block_marks: str = "start"  # "start": a block begins at its first marked layer; "end": a marked layer ends it
    imagenet_alphas: tuple[float, ...] = ()  # non-empty: the family takes --alpha; these have ImageNet weights
    has_imagenet: bool = True


def _simple_cnn(include_top=False, weights=None, input_shape=(64, 64, 3)):
    """From-scratch baseline for the "is transfer worth it" comparison: three conv-BN-ReLU x2 + pool blocks.

    BatchNorm momentum 0.9, not Keras' 0.99: inference runs on the moving statistics, which start at mean 0 /
    variance 1, far from the first convolution's (variance ~0.05 on [-1, 1] pixels). With 0.99 they keep 89% of
    the start after 12 steps, activations shrink layer by layer at inference and a short run's predictions hang
    on rounding: after 12 steps on the tests' colour images a class was lost in 1 of 18 float32 and 3 of 18
    bfloat16 runs, in none of 18 with 0.9 (28% of the start left after 12 steps, 8% after 24).
    """
    if include_top or weights is not None:
        raise ValueError("simple_cnn has no top and no pretrained weights")
    inputs = keras.Input(input_shape)
    x = inputs
    for block, filters in enumerate((32, 64, 128), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name="simple_cnn")


_TF = "[-1, 1]"
_CAFFE = "BGR, ImageNet mean"
_TORCH = "[0, 1], ImageNet mean/std"
_INSIDE = "in the backbone"  # families built with include_preprocessing: preprocess_input is the identity


def _family(variants: dict[str, tuple[str, int]], module, scaling: str, fine_tune_at: str, block_pattern: str,
            blocks_hint: str, min_size: int = 32, **options) -> dict[str, BackboneSpec]:
    """Specs for the variants {key: (keras.applications constructor, default size)} of one family."""
    return {key: BackboneSpec(getattr(A, constructor), module.preprocess_input, scaling, size, min_size, fine_tune_at,
                              block_pattern, blocks_hint, **options)
            for key, (constructor, size) in variants.items()}


_EFFICIENTNET = r"^(block\d+[a-z])_"
_RESNET = r"^(conv\d_block\d+)_"
_MOBILENET_V3 = r"^(expanded_conv(?:_\d+)?)_"

REGISTRY: dict[str, BackboneSpec] = {
    **_family({"mobilenet_v2": ("MobileNetV2", 224)}, A.mobilenet_v2, _TF, "block_13",
              r"^(expanded_conv|block_\d+)_", "expanded_conv, block_1 .. block_16",
              imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
    **_family({"mobilenet_v3_small": ("MobileNetV3Small", 224)}, A.mobilenet_v3, _INSIDE, "expanded_conv_8",
              _MOBILENET_V3, "expanded_conv, expanded_conv_1 .. expanded_conv_10", imagenet_alphas=(0.75, 1.0)),
    **_family({"mobilenet_v3_large": ("MobileNetV3Large", 224)}, A.mobilenet_v3, _INSIDE, "expanded_conv_12",
              _MOBILENET_V3, "expanded_conv, expanded_conv_1 .. expanded_conv_14", imagenet_alphas=(0.75, 1.0)),
    **_family({f"efficientnet_b{i}": (f"EfficientNetB{i}", size)
               for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
              A.efficientnet, _INSIDE, "block6a", _EFFICIENTNET, "block1a .. block7*"),
    **_family({f"efficientnet_v2_{v.lower()}": (f"EfficientNetV2{v}", size)
               for v, size in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300), ("S", 384))},
              A.efficientnet_v2, _INSIDE, "block6a", _EFFICIENTNET, "block1a .. block6*"),
    **_family({"efficientnet_v2_m": ("EfficientNetV2M", 480), "efficientnet_v2_l": ("EfficientNetV2L", 480)},
              A.efficientnet_v2, _INSIDE, "block6a", _EFFICIENTNET, "block1a .. block7*"),
    **_family({f"resnet{depth}": (f"ResNet{depth}", 224) for depth in (50, 101, 152)},
              A.resnet, _CAFFE, "conv5_block1", _RESNET, "conv2_block1 .. conv5_block3"),
    **_family({f"resnet{depth}_v2": (f"ResNet{depth}V2", 224) for depth in (50, 101, 152)},
              A.resnet_v2, _TF, "conv5_block1", _RESNET, "conv2_block1 .. conv5_block3"),
    # Inception blocks start with auto-named convolutions, so they are found by the layer that ends them:
    # fine_tune_at=mixed9 trains mixed9 and mixed10, i.e. layers[249:], the classic "top two blocks".
    **_family({"inception_v3": ("InceptionV3", 299)}, A.inception_v3, _TF, "mixed9", r"^(mixed\d+)$",
              "mixed0 .. mixed10", min_size=75, block_marks="end"),
    **_family({"inception_resnet_v2": ("InceptionResNetV2", 299)}, A.inception_resnet_v2, _TF, "mixed_7a",
              r"^(mixed_\d[a-z]|block\d+_\d+)(?:_ac)?$",
              "mixed_5b, block35_1 .., mixed_6a, block17_1 .., mixed_7a, block8_1 .. block8_9", min_size=75,
              block_marks="end"),
    **_family({"xception": ("Xception", 299)}, A.xception, _TF, "block13", r"^(block\d+)_", "block1 .. block14",
              min_size=71),
    **_family({f"densenet{depth}": (f"DenseNet{depth}", 224) for depth in (121, 169, 201)},
              A.densenet, _TORCH, "conv5_block1", _RESNET, "conv2_block1 .. conv5_block16|32"),
    **_family({"vgg16": ("VGG16", 224)}, A.vgg16, _CAFFE, "block5", r"^(block\d)_", "block1 .. block5"),
    **_family({"vgg19": ("VGG19", 224)}, A.vgg19, _CAFFE, "block5", r"^(block\d)_", "block1 .. block5"),
    **_family({f"convnext_{size.lower()}": (f"ConvNeXt{size}", 224)
               for size in ("Tiny", "Small", "Base", "Large", "XLarge")},
              A.convnext, _INSIDE, "stage_3_block_0", r"_(stage_\d_block_\d+)_", "stage_0_block_0 .. stage_3_block_2"),
    **_family({"nasnet_mobile": ("NASNetMobile", 224)}, A.nasnet, _TF, "normal_concat_9",
              r"^((?:normal|reduction)_concat_\w+)$",
              "reduction_concat_stem_1 .., normal_concat_0 .. normal_concat_12", block_marks="end"),
    "simple_cnn": BackboneSpec(
        _simple_cnn, functools.partial(A.imagenet_utils.preprocess_input, mode="tf"), _TF, 64, 8, "block1",
        r"^(block\d)_", "block1 .. block3", has_imagenet=False),
}


def lookup(name: str) -> str:
    """The registry key for `name`, also accepting Keras spellings such as MobileNetV2 or EfficientNetB0."""
    if name in REGISTRY:
        return name
    squashed = {key.replace("_", ""): key for key in REGISTRY}
    key = squashed.get(re.sub(r"[\W_]", "", name).lower())
    if key is None:
        close = difflib.get_close_matches(name.lower(), REGISTRY, n=4, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}; " if close else ""
        raise ValueError(f"unknown --model={name}: {hint}--model=list shows all {len(REGISTRY)}")
    return key


def describe_models() -> str:
    """The --model=list table: one row per registry entry."""
    header = ("model", "keras.applications", "size", "min", "preprocessing", "fine_tune_at", "blocks")
    rows = [header] + [
        (key + (" (alpha)" if spec.imagenet_alphas else ""),
         spec.constructor.__name__ if spec.has_imagenet else "(tltrain, from scratch)", str(spec.default_size),
         str(spec.min_size), spec.scaling, spec.fine_tune_at, spec.blocks_hint)
        for key, spec in REGISTRY.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows)


def validate(model_cfg: ModelConfig, image_size: int) -> int:
    """Checks the model flags before anything is built; returns the image size to use (its default for 0)."""
    model_cfg.validate()
    spec = REGISTRY[lookup(model_cfg.model)]
    size = image_size or spec.default_size
    if size < spec.min_size:
        raise ValueError(f"--image_size={size} is too small for {model_cfg.model}: it needs at least {spec.min_size}")
    if model_cfg.alpha != 1.0 and not spec.imagenet_alphas:
        raise ValueError(f"--alpha={model_cfg.alpha} only applies to the MobileNet families, not {model_cfg.model}")
    weights = model_cfg.weights
    if weights == "imagenet":
        if not spec.has_imagenet:
            raise ValueError(f"{model_cfg.model} has no ImageNet weights: use --weights=none (or a PATH)")
        if spec.imagenet_alphas and model_cfg.alpha not in spec.imagenet_alphas:
            raise ValueError(f"--alpha={model_cfg.alpha}: {model_cfg.model} has ImageNet weights only for alpha in "
                             f"{', '.join(map(str, spec.imagenet_alphas))} (or use --weights=none)")
    elif weights != "none":
        weights_lib.check_file(weights)
    return size


@keras.saving.register_keras_serializable(package="tltrain")
class BackbonePreprocess(layers.Layer):
    """The backbone family's own preprocess_input, as a layer: runs on the accelerator, travels with exports.

    Always float32: caffe-style mean subtraction in bfloat16 would round pixels to whole steps of 1-2.
    """

    def __init__(self, model: str, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.model = model
        self._preprocess = REGISTRY[lookup(model)].preprocess

    def call(self, pixels):
        return self._preprocess(keras.ops.cast(pixels, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "model": self.model}


def build_classifier(model_cfg: ModelConfig, num_classes: int, image_size: int) -> keras.Model:
    """Pixels in [0, 255] (uint8 or float) -> class probabilities, float32 whatever the dtype policy."""
    size = validate(model_cfg, image_size)
    key = lookup(model_cfg.model)
    backbone = _build_backbone(key, model_cfg, size)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = BackbonePreprocess(key, name="preprocess")(inputs)
    x = backbone(x)
    pooling = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D, "flatten": layers.Flatten}
    x = pooling[model_cfg.pooling](name=f"{model_cfg.pooling}_pool")(x)
    for layer in head_layers(model_cfg, num_classes):
        x = layer(x)
    return keras.Model(inputs, x, name=key)


def head_layers(model_cfg: ModelConfig, num_classes: int) -> list[layers.Layer]:
    """The new head on the pooled features, in order: per --head_units a dropout and a ReLU layer, then a
    dropout and the float32 softmax classifier (the dropouts only with --dropout, L2 only with --l2)."""
    regularizer = keras.regularizers.L2(model_cfg.l2) if model_cfg.l2 else None
    head = []
    for i, units in enumerate(model_cfg.head_units):
        if model_cfg.dropout:
            head.append(layers.Dropout(model_cfg.dropout, name=f"head_dropout_{i}"))
        head.append(layers.Dense(units, activation="relu", kernel_regularizer=regularizer, name=f"head_dense_{i}"))
    if model_cfg.dropout:
        head.append(layers.Dropout(model_cfg.dropout, name="dropout"))
    head.append(layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer, dtype="float32",
                             name="predictions"))
    return head


@keras.saving.register_keras_serializable(package="tltrain")
class HorizontalFlip(layers.Layer):
    """Images [N, H, W, C] mirrored left-right: the second view of flip test-time augmentation."""

    def call(self, images):
        return keras.ops.flip(images, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


def with_flip_tta(model: keras.Model) -> keras.Model:
    """The classifier averaging its probabilities over the image and its mirror (--tta=flip): the same inputs
    and outputs as `model`, so evaluation, export and predict take it as it is."""
    pixels = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="pixels")
    mirrored = HorizontalFlip(name="mirror")(pixels)
    averaged = layers.Average(dtype="float32", name="tta_average")([model(pixels), model(mirrored)])
    return keras.Model(pixels, averaged, name=f"{model.name}_flip_tta")


def _build_backbone(key: str, model_cfg: ModelConfig, size: int) -> keras.Model:
    """The family's include_top=False model with its weights, cut at --feature_layer, as a model named "backbone".

    The family keeps its own model name: EfficientNetV2 looks its blocks up by it and ConvNeXt prefixes its
    layer names with it, which weight files are matched against.
    """
    spec = REGISTRY[key]
    kwargs = dict(include_top=False, input_shape=(size, size, 3),
                  weights="imagenet" if model_cfg.weights == "imagenet" else None)
    if spec.imagenet_alphas:
        kwargs["alpha"] = model_cfg.alpha
    with _explain_imagenet_download(key):
        full = spec.constructor(**kwargs)
    if model_cfg.weights not in ("imagenet", "none"):
        # Before any cut: auto-named layers are matched by their rank among the whole backbone's layers.
        weights_lib.load_backbone_weights(full, model_cfg.weights, model_cfg.min_matched_fraction)
    names = [layer.name for layer in full.layers]
    if model_cfg.feature_layer and model_cfg.feature_layer not in names:
        close = difflib.get_close_matches(model_cfg.feature_layer, names, n=5, cutoff=0.4) or names[-3:]
        raise ValueError(f"--feature_layer={model_cfg.feature_layer} is not a layer of {key}; "
                         f"e.g. {', '.join(close)} (model.get_layer('backbone').summary() lists all {len(names)})")
    features = full.get_layer(model_cfg.feature_layer).output if model_cfg.feature_layer else full.output
    return keras.Model(full.inputs, features, name="backbone")


@contextlib.contextmanager
def _explain_imagenet_download(key: str) -> Iterator[None]:
    """Turns a failed ImageNet weights download into one line naming the file and where Keras looks for it."""
    original_get_file = _keras_file_utils.get_file

    def explaining_get_file(fname=None, origin=None, *args, cache_subdir="datasets", cache_dir=None, **kwargs):
        try:
            return original_get_file(fname, origin, *args, cache_subdir=cache_subdir, cache_dir=cache_dir, **kwargs)
        except Exception as error:
            base = os.path.expanduser(cache_dir or _keras_config.keras_home())
            if not os.access(base, os.W_OK):  # where get_file itself falls back to
                base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
            reason = " ".join(str(error).replace(str(origin), "<url>").split())[:160]
            raise ValueError(
                f"--weights=imagenet: could not download {fname} for {key} ({reason}); offline, put that file in "
                f"{os.path.join(base, cache_subdir)}/ (from {origin}), or use --weights=none or a PATH") from error

    _keras_file_utils.get_file = explaining_get_file
    try:
        yield
    finally:
        _keras_file_utils.get_file = original_get_file


# ------------------------------------------------------------------------------------------------- what trains

def set_phase(model: keras.Model, phase: str, model_cfg: ModelConfig, fine_tune_at: str,
              fine_tune_batchnorm: bool) -> int:
    """Sets trainable flags for a training phase; returns how many backbone layers have weights that train.

    transfer: backbone frozen (its BatchNorm layers then run in inference mode). fine_tune: backbone layers from
    `fine_tune_at` (index, layer name, or block name; "" = the family's default) on. full: the whole backbone.
    BatchNorm layers of a pretrained backbone keep their statistics unless `fine_tune_batchnorm`; a backbone
    trained from scratch (weights none) has no statistics worth keeping, so its BatchNorm layers train.
    The head always trains. Recompile (or rebuild the train step) after changing phase.
    """
    if phase not in TRAINING_PHASES:
        raise ValueError(f"unknown training phase {phase!r}: expected one of {', '.join(TRAINING_PHASES)}")
    backbone = model.get_layer("backbone")
    for layer in model.layers:
        layer.trainable = True
    if phase == "transfer":
        backbone.trainable = False
    else:
        start = 0 if phase == "full" else fine_tune_start(backbone, model_cfg, fine_tune_at)
        train_batchnorm = fine_tune_batchnorm or model_cfg.weights == "none"
        for index, layer in enumerate(backbone.layers):
            is_batchnorm = isinstance(layer, layers.BatchNormalization)
            layer.trainable = index >= start and (train_batchnorm or not is_batchnorm)
    return sum(1 for layer in backbone.layers if layer.trainable_weights)


def fine_tune_start(backbone: keras.Model, model_cfg: ModelConfig, fine_tune_at: str) -> int:
    """Index of the first backbone layer that fine-tunes: from a layer index, a block name, a layer name, or a
    fraction of the blocks (0.33: the top third of them, at least one)."""
    key = lookup(model_cfg.model)
    value = fine_tune_at or REGISTRY[key].fine_tune_at
    names = [layer.name for layer in backbone.layers]
    if re.fullmatch(r"-?\d+", value):
        index = int(value)
        if not -len(names) <= index < len(names):
            raise ValueError(f"--fine_tune_at={value} is out of range: {key} has {len(names)} backbone layers")
        return index % len(names)
    blocks = block_starts(key, names)
    if re.fullmatch(r"0?\.\d+", value) and blocks:
        starts = list(blocks.values())
        return starts[-max(1, math.ceil(float(value) * len(starts)))]
    if value in blocks:
        return blocks[value]
    if value in names:
        return names.index(value)
    listed = list(blocks)
    shown = ", ".join(listed if len(listed) <= 8 else listed[:3] + ["..."] + listed[-3:])
    raise ValueError(f"unknown --fine_tune_at={value} for {key}: give a layer index (0-{len(names) - 1}), a layer "
                     f"name, a block ({shown or 'none in this cut'}) or a fraction of the blocks (0.33)")


def block_starts(key: str, layer_names: list[str]) -> dict[str, int]:
    """{block name: index of its first layer} for a backbone's layers, in order."""
    spec = REGISTRY[key]
    starts = {}
    if spec.block_marks == "start":
        for index, name in enumerate(layer_names):
            match = re.search(spec.block_pattern, name)
            if match:
                starts.setdefault(match.group(1), index)
    else:
        begin = 1  # after the input layer
        for index, name in enumerate(layer_names):
            match = re.search(spec.block_pattern, name)
            if match and match.group(1) not in starts:
                starts[match.group(1)] = begin
                begin = index + 1
    return starts
