"""Backbone weights from a file (--weights=PATH): a quick check of the file before anything is built, and the
copy of every backbone layer the file holds under the same name and shapes, whatever Keras wrote it."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras import layers

log = logging.getLogger(__name__)

_WEIGHTS_SIGNATURES = (b"\x89HDF\r\n\x1a\n", b"PK\x03\x04")  # .h5 / .weights.h5 (HDF5), .keras (zip)


def check_file(weights: str) -> None:
    """--weights=PATH is a file that starts like HDF5 or a .keras zip: read 8 bytes now, not the file once
    the model is built."""
    expected = "expected imagenet, none, or a .weights.h5/.keras/.h5 file"
    if not tf.io.gfile.exists(weights):
        raise ValueError(f"--weights={weights}: no such file ({expected})")
    try:
        with tf.io.gfile.GFile(weights, "rb") as f:
            head = f.read(8)
    except (OSError, tf.errors.OpError) as error:
        raise ValueError(f"--weights={weights}: cannot be read ({' '.join(str(error).split())[:120]}; {expected})") from None
    if not head.startswith(_WEIGHTS_SIGNATURES):
        raise ValueError(f"--weights={weights}: neither an HDF5 file nor a .keras archive ({expected})")


def load_backbone_weights(model: keras.Model, weights: str, min_matched_fraction: float) -> tuple[int, int]:
    """Copies into the backbone every layer of the file at `weights` with the same name and weight shapes.

    `model` is a backbone or a classifier holding one named "backbone". The file is a backbone .weights.h5, or
    any saved Keras model (.keras, or a legacy .h5 read straight with h5py, Keras 2 era included) that contains
    the same backbone, nested or not. Auto-named layers (conv2d_94, normalization_1, ...) are numbered by the
    order of creation of that process, so they are matched by their rank among same-named layers instead.
    Returns (matched, total) over the backbone's layers that have weights; raises one line below the threshold.
    """
    backbone = _backbone_of(model)
    targets = _canonical(backbone.layers, backbone.layers)
    targets = {name: layer for name, layer in targets.items() if layer.weights}
    try:
        with _local_copy(weights) as path:
            groups = [_canonical(group, backbone.layers) for group in _read_weight_groups(path, backbone)]
    except Exception as error:  # any unreadable file: one line naming it
        reason = " ".join(str(error).split())[:200]
        raise ValueError(f"--weights={weights}: cannot read it as Keras weights or a Keras model ({reason})") from None
    best = max((_matches(targets, group) for group in groups), key=len, default={})
    matched, total = len(best), len(targets)
    log.info("--weights=%s: %d of %d backbone layers matched by name and shape", weights, matched, total)
    if not total or matched < min_matched_fraction * total:
        raise ValueError(f"--weights={weights}: only {matched} of {total} backbone layers ({backbone.name}) matched by "
                         f"name and shape (need {min_matched_fraction:.0%}); does it hold the same backbone and --alpha?")
    for name, values in best.items():
        targets[name].set_weights(values)
    return matched, total


def _backbone_of(model: keras.Model) -> keras.Model:
    try:
        return model.get_layer("backbone")
    except ValueError:
        return model


def _matches(targets: dict, group: dict) -> dict[str, list[np.ndarray]]:
    """Source weights for each target layer whose same-named source layer has the same weight shapes, in order."""
    found = {}
    for name, layer in targets.items():
        values = group.get(name)
        if values is not None and [tuple(v.shape) for v in layer.weights] == [v.shape for v in values]:
            found[name] = values
    return found


def _snake(class_name: str) -> str:
    """Keras' automatic layer-name prefix for a class: Conv2D -> conv2d, BatchNormalization -> batch_normalization."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _canonical(items, backbone_layers) -> dict:
    """{name: item} with auto-generated names replaced by base#rank (rank by creation number, per base).

    `items` are Keras layers or (name, weights) pairs read from a file; a name counts as automatic when it is the
    snake-case class name of a backbone layer, optionally followed by _N.
    """
    auto_bases = {_snake(type(layer).__name__) for layer in backbone_layers}
    named = [(item.name, item) if isinstance(item, layers.Layer) else item for item in items]
    numbered = {}
    for name, _ in named:
        base, number = re.fullmatch(r"(.*?)(?:_(\d+))?", name).groups()
        if base in auto_bases:
            numbered.setdefault(base, []).append((int(number or 0), name))
    renamed = {name: f"{base}#{rank}" for base, names in numbered.items()
               for rank, (_, name) in enumerate(sorted(names))}
    return {renamed.get(name, name): item for name, item in named}


@contextlib.contextmanager
def _local_copy(path: str) -> Iterator[str]:
    """h5py and Keras loaders need a local file: gs:// and other tf.io.gfile paths are copied to a temp dir."""
    if "://" not in path:
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        tf.io.gfile.copy(path, local)
        yield local


def _read_weight_groups(path: str, backbone: keras.Model) -> list[list[tuple[str, list[np.ndarray]]]]:
    """The file's layers as groups of (layer name, weights): one group per (nested) model in it."""
    if zipfile.is_zipfile(path):  # .keras
        return list(_model_groups(keras.models.load_model(path, compile=False)))
    with h5py.File(path, "r") as h5:
        if "model_weights" in h5:  # legacy full-model .h5
            return _legacy_h5_groups(h5["model_weights"])
        if "layer_names" in h5.attrs:  # legacy save_weights .h5
            return _legacy_h5_groups(h5)
    # Keras 3 .weights.h5 names layers by class and position, not by name: load it into a copy of the backbone.
    clone = keras.models.clone_model(backbone)
    clone.load_weights(path)
    return list(_model_groups(clone))


def _model_groups(model: keras.Model) -> Iterator[list[tuple[str, list[np.ndarray]]]]:
    yield [(layer.name, layer.get_weights()) for layer in model.layers
           if layer.weights and not isinstance(layer, keras.Model)]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _model_groups(layer)


def _legacy_h5_groups(root: h5py.Group) -> list[list[tuple[str, list[np.ndarray]]]]:
    """Legacy HDF5 layout: a group per top-level layer listing its weight names ("Conv1/kernel:0" in Keras 2).

    A nested model's group holds all its layers' weights (trainable first; each layer's own order is kept).
    """
    top, nested = {}, {}
    for group_name in _h5_strings(root.attrs["layer_names"]):
        group = root[group_name]
        for weight_name in _h5_strings(group.attrs.get("weight_names", [])):
            parts = weight_name.split(":")[0].split("/")
            layer_name = parts[-2] if len(parts) > 1 else group_name
            owner = top if layer_name == group_name else nested.setdefault(group_name, {})
            owner.setdefault(layer_name, []).append(np.asarray(group[weight_name]))
    return [list(group.items()) for group in (top, *nested.values())]


def _h5_strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
