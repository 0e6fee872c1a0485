"""TFLite model metadata (input normalization, class labels) in the format LiteRT, MediaPipe Tasks and the
TFLite Task Library read: a "TFLITE_METADATA" buffer holding a `ModelMetadata` flatbuffer (schema
metadata_schema.fbs, file identifier "M001") and the label file zipped onto the end of the model.

Written with the `flatbuffers` package TensorFlow already depends on: the maintained writers do not install next
to TensorFlow 2.21 (tflite-support pins protobuf<4; mediapipe's Python metadata writer imports a native
module its current wheels no longer ship). Only fields of metadata parser version 1.0.0 are used.
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as model_schema
from tensorflow.lite.tools import flatbuffer_utils

METADATA_NAME = b"TFLITE_METADATA"  # the name readers look up in Model.metadata
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # every field written here exists in metadata schema 1.0.0
LABELS_FILE = "labels.txt"

# Enum values and union type tags of metadata_schema.fbs.
_RGB = 1  # ColorSpaceType
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties union
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union


def _table(builder: flatbuffers.Builder, fields: dict[int, tuple[str, int | float]]) -> int:
    """A table from {slot: (kind, value)}; kind is "offset" (a string, vector or table written before) or a
    scalar type ("int8", "uint8", "uint32"). A union field takes two slots: its type tag, then its value."""
    builder.StartObject(max(fields, default=-1) + 1)
    for slot, (kind, value) in fields.items():
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        else:
            getattr(builder, f"Prepend{kind.capitalize()}Slot")(slot, value, 0)
    return builder.EndObject()


def _vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _floats(builder: flatbuffers.Builder, values: list[float]) -> int:
    return builder.CreateNumpyVector(np.asarray(values, np.float32))


def _stats(builder: flatbuffers.Builder, low: float, high: float) -> int:
    maximum, minimum = _floats(builder, [high]), _floats(builder, [low])
    return _table(builder, {0: ("offset", maximum), 1: ("offset", minimum)})  # Stats {max, min}


def model_metadata(name: str, description: str, class_count: int, image_size: int) -> bytes:
    """The ModelMetadata flatbuffer of a classifier taking uint8 RGB pixels [N, size, size, 3] as they are
    (normalization mean 0, std 1: the model does its own preprocessing) and returning class probabilities,
    with labels.txt naming the classes in output order."""
    b = flatbuffers.Builder(1024)
    s = b.CreateString
    # Input: an RGB image of raw pixels.
    image_size_table = _table(b, {0: ("uint32", image_size), 1: ("uint32", image_size)})  # ImageSize {width, height}
    image_properties = _table(b, {0: ("int8", _RGB), 1: ("offset", image_size_table)})
    image_content = _table(b, {0: ("uint8", _IMAGE_PROPERTIES), 1: ("offset", image_properties)})
    mean, std = _floats(b, [0.0]), _floats(b, [1.0])
    normalization = _table(b, {0: ("offset", mean), 1: ("offset", std)})
    process_unit = _table(b, {0: ("uint8", _NORMALIZATION_OPTIONS), 1: ("offset", normalization)})
    process_units, input_stats = _vector(b, [process_unit]), _stats(b, 0.0, 255.0)
    input_name = s("image")
    input_description = s(f"RGB pixels, uint8 [N, {image_size}, {image_size}, 3] in [0, 255], centre-cropped "
                          "and resized like tltrain's evaluation")
    input_tensor = _table(b, {0: ("offset", input_name), 1: ("offset", input_description), 3: ("offset", image_content),
                              4: ("offset", process_units), 5: ("offset", input_stats)})
    # Output: one probability per class, named by labels.txt.
    label_name, label_description = s(LABELS_FILE), s("class names, one per line, in output order")
    label_file = _table(b, {0: ("offset", label_name), 1: ("offset", label_description),
                            2: ("int8", _TENSOR_AXIS_LABELS)})
    label_files = _vector(b, [label_file])
    feature_properties = _table(b, {})
    feature_content = _table(b, {0: ("uint8", _FEATURE_PROPERTIES), 1: ("offset", feature_properties)})
    output_stats = _stats(b, 0.0, 1.0)
    output_name, output_description = s("probability"), s(f"float32 [N, {class_count}]: probability of each class")
    output_tensor = _table(b, {0: ("offset", output_name), 1: ("offset", output_description),
                               3: ("offset", feature_content), 5: ("offset", output_stats),
                               6: ("offset", label_files)})
    inputs, outputs = _vector(b, [input_tensor]), _vector(b, [output_tensor])
    subgraph = _table(b, {2: ("offset", inputs), 3: ("offset", outputs)})  # SubGraphMetadata
    subgraphs = _vector(b, [subgraph])
    model_name, model_description, parser_version = s(name), s(description), s(MIN_PARSER_VERSION)
    root = _table(b, {0: ("offset", model_name), 1: ("offset", model_description), 3: ("offset", subgraphs),
                      7: ("offset", parser_version)})  # ModelMetadata {name, description, .., min_parser_version}
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def with_metadata(model: bytes, metadata: bytes, class_names: list[str]) -> bytes:
    """The .tflite `model` with `metadata` as its TFLITE_METADATA buffer and labels.txt zipped onto its end
    (stored uncompressed, as the C++ readers require)."""
    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    tree.metadata = [m for m in tree.metadata or [] if m.name != METADATA_NAME]
    buffer = model_schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    tree.buffers.append(buffer)
    entry = model_schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(tree.buffers) - 1
    tree.metadata.append(entry)
    packed = io.BytesIO(flatbuffer_utils.convert_object_to_bytearray(tree))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, "".join(f"{name}\n" for name in class_names))
    return packed.getvalue()
