"""Export, predict and evaluate give what the trained model gives in-process, from image files to names."""

import dataclasses
import io
import json
import logging
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tltrain import console_tools, data, evaluate, export, export_report, predict, run_dir, tflite, train
from tltrain import main as main_lib
from tltrain.config import RunConfig


@pytest.fixture(scope="module")
def trained_in(tmp_path_factory, color_records):
    """trained_in(precision): a simple_cnn trained for 4 epochs (24 steps: BatchNorm's moving statistics have
    left their start, which inference runs on) on the colour records under --mixed_precision, exported
    (float32: with every TFLite variant), made on first use: (model_dir, export paths)."""
    runs = {}

    def run(precision: str):
        if precision not in runs:
            model_dir = tmp_path_factory.mktemp(f"export_{precision}") / "run"
            cfg = RunConfig()
            cfg.data = dataclasses.replace(cfg.data, records_dir=str(color_records), image_size=32, batch_size=16)
            cfg.model = dataclasses.replace(cfg.model, model="simple_cnn", weights="none")
            cfg.train = dataclasses.replace(cfg.train, model_dir=str(model_dir), freeze="none", epochs=4,
                                            learning_rate=3e-3, mixed_precision=precision)
            train.train(train.prepare(cfg))
            variants = tflite.VARIANTS if precision == "none" else ()
            runs[precision] = model_dir, export.export(str(model_dir), tflite_variants=variants, quantize_samples=16)
        return runs[precision]

    return run


@pytest.fixture(scope="module")
def trained(trained_in):
    """The float32 run (the numbers the parity tests compare are float32's)."""
    return trained_in("none")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A red JPEG, a green PNG (odd sizes, so the centre crop and resize matter) and a blue one in a folder."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for name, channel, size in (("red.jpg", 0, (50, 70)), ("green.png", 1, (64, 41)), ("more/blue.jpg", 2, (36, 36))):
        pixels = rng.integers(0, 100, size=(*size, 3))
        pixels[..., channel] += 140
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(str(path))
    return folder, paths


def in_process_probabilities(model_dir, paths):
    """What the checkpointed model gives on data.decode_for_eval pixels, computed here by hand."""
    cfg, model, _ = run_dir.load_trained(str(model_dir))
    pixels = np.stack([data.decode_for_eval(tf.constant(open(p, "rb").read()), cfg.data.image_size,
                                            cfg.data.eval_crop_fraction).numpy() for p in paths])
    return model(pixels, training=False).numpy(), pixels


@pytest.mark.parametrize("precision", ["none", "bfloat16"])  # trained in float32 / mixed_bfloat16
def test_serving_signature_takes_image_bytes_and_returns_probabilities_and_names(trained_in, images, precision):
    model_dir, paths = trained_in(precision)
    expected, _ = in_process_probabilities(model_dir, images[1])
    serve = tf.saved_model.load(paths["saved_model"]).signatures[export.SERVING_SIGNATURE]
    outputs = serve(image_bytes=tf.constant([open(p, "rb").read() for p in images[1]]))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    assert outputs["class_names"].numpy().tolist() == [[b"red", b"green", b"blue"]] * 3
    assert outputs["predicted_class"].numpy().tolist() == [b"red", b"green", b"blue"]  # the model learned colours
    assert open(paths["labels"]).read() == "red\ngreen\nblue\n"


# How far each variant's probabilities may be from model.keras's. Each must also give the same top-1 class
# wherever model.keras's top two are further apart than twice that (closer ones may swap within tolerance).
TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "int8": 0.05}


def validation_pixels(color_records):
    """Every validation image through the evaluation decode, and its label."""
    cfg = dataclasses.replace(RunConfig().data, records_dir=str(color_records), batch_size=16)
    batches = list(data.make_eval_dataset(cfg, 32, "validation").unbatch().as_numpy_iterator())
    return np.stack([image for image, label in batches if label >= 0]), np.array([l for _, l in batches if l >= 0])


def test_keras_file_and_every_tflite_variant_agree_with_the_trained_model(trained, images, color_records):
    model_dir, paths = trained
    expected, pixels = in_process_probabilities(model_dir, images[1])
    np.testing.assert_allclose(keras.saving.load_model(paths["keras"])(pixels).numpy(), expected, atol=1e-5)
    validation, _ = validation_pixels(color_records)
    _, model, _ = run_dir.load_trained(str(model_dir))
    pixels = np.concatenate([pixels, validation])
    expected = model(pixels, training=False).numpy()
    for variant in tflite.VARIANTS:
        classify = tflite.Classifier(open(paths[f"tflite_{variant}"], "rb").read())
        assert classify.interpreter.get_input_details()[0]["dtype"] == np.uint8
        probabilities = classify(pixels)
        assert probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities, expected, atol=TOLERANCE[variant], err_msg=variant)
        top2 = np.sort(expected, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * TOLERANCE[variant]
        assert clear.mean() > 0.8, variant  # the check below covers most images
        np.testing.assert_array_equal(probabilities.argmax(-1)[clear], expected.argmax(-1)[clear], err_msg=variant)
    sizes = {variant: len(open(paths[f"tflite_{variant}"], "rb").read()) for variant in tflite.VARIANTS}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]  # int8 and float16 weights really are smaller


def read_metadata(path):
    """The TFLITE_METADATA of a .tflite, parsed with MediaPipe's code generated from metadata_schema.fbs, and
    the files zipped onto the model."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
    from tensorflow.lite.python import schema_py_generated as model_schema

    content = open(path, "rb").read()
    model = model_schema.Model.GetRootAs(content, 0)
    entries = {model.Metadata(i).Name(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    buffer = model.Buffers(entries[b"TFLITE_METADATA"]).DataAsNumpy().tobytes()
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    return schema, schema.ModelMetadata.GetRootAs(buffer, 0), {n: archive.read(n).decode() for n in archive.namelist()}


def test_tflite_metadata_names_the_classes_in_index_order_for_mediapipe(trained, images):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    model_dir, paths = trained
    expected, pixels = in_process_probabilities(model_dir, images[1])
    for variant in tflite.VARIANTS:
        schema, metadata, files = read_metadata(paths[f"tflite_{variant}"])
        assert metadata.MinParserVersion() == b"1.0.0"
        subgraph = metadata.SubgraphMetadata(0)
        image, output = subgraph.InputTensorMetadata(0), subgraph.OutputTensorMetadata(0)
        assert image.Content().ContentPropertiesType() == schema.ContentProperties.ImageProperties
        unit = image.ProcessUnits(0)
        assert unit.OptionsType() == schema.ProcessUnitOptions.NormalizationOptions
        normalization = schema.NormalizationOptions()
        normalization.Init(unit.Options().Bytes, unit.Options().Pos)
        assert (normalization.MeanAsNumpy().tolist(), normalization.StdAsNumpy().tolist()) == ([0.0], [1.0])
        labels = output.AssociatedFiles(0)
        assert labels.Type() == schema.AssociatedFileType.TENSOR_AXIS_LABELS
        assert files[labels.Name().decode()] == "red\ngreen\nblue\n"

        # MediaPipe's ImageClassifier reads the metadata itself: names, in the model's index order, and scores.
        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=paths[f"tflite_{variant}"]), max_results=3)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            for row, image_pixels in zip(expected, pixels):
                result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image_pixels))
                categories = result.classifications[0].categories
                assert {c.index: c.category_name for c in categories} == {0: "red", 1: "green", 2: "blue"}
                scores = np.array([next(c.score for c in categories if c.index == i) for i in range(3)])
                np.testing.assert_allclose(scores, row, atol=TOLERANCE[variant], err_msg=variant)


def test_export_report_measures_every_format_on_the_whole_split(trained, color_records):
    model_dir, paths = trained
    report = json.loads(open(paths["report"]).read())
    assert (report["split"], report["count"], report["quantize_samples"]) == ("validation", 36, 16)
    rows = {row["format"]: row for row in report["formats"]}
    assert list(rows) == ["model.keras", "saved_model", *(tflite.file_name(v) for v in tflite.VARIANTS)]
    validation, labels = validation_pixels(color_records)
    keras_top1 = keras.saving.load_model(paths["keras"])(validation).numpy().argmax(-1)
    assert rows["model.keras"]["accuracy"] == pytest.approx(np.mean(keras_top1 == labels))
    for name, row in rows.items():
        assert row["accuracy"] > 0.9 and row["agreement"] >= (1.0 if name == "saved_model" else 0.9), name
        assert row["accuracy"] >= rows["model.keras"]["accuracy"] - 0.01 or name.endswith("int8.tflite"), name
        assert (row["latency_ms"] is not None) == name.endswith(".tflite"), name
        assert row["latency_ms"] is None or row["latency_ms"] >= row["latency_best_ms"] > 0
    assert rows["model.keras"]["size_bytes"] == (model_dir / "export" / "model.keras").stat().st_size
    assert rows["saved_model"]["size_bytes"] == sum(
        f.stat().st_size for f in (model_dir / "export" / "saved_model").rglob("*") if f.is_file())


def test_a_variant_that_loses_accuracy_fails_the_export_with_one_line(trained, tmp_path, monkeypatch):
    model_dir, _ = trained
    flags = ["--mode=export", f"--model_dir={model_dir}", f"--export_dir={tmp_path}"]
    assert "--export_tflite=int4,int8: unknown variant int4" in main_error(*flags, "--export_tflite=int4,int8")
    # Calibrating on black images: the int8 input range collapses and every image looks alike (the classic
    # silent failure of post-training quantization).
    monkeypatch.setattr(tflite, "calibration_images",
                        lambda cfg, count, split="": np.zeros([count, 32, 32, 3], np.uint8))
    message = main_error(*flags, "--export_tflite=int8", "--quantize_samples=4")
    assert message.startswith("tltrain: export rejected: model_int8.tflite: top-1 ")
    assert "points below model.keras's" in message and "--max_accuracy_drop=1" in message
    report = json.loads((tmp_path / export_report.REPORT_FILE).read_text())  # written, for a look at it
    assert report["formats"][2]["accuracy"] < report["formats"][0]["accuracy"] - 0.01
    main_lib.FLAGS.unparse_flags()
    main_lib.main(main_lib._parse_flags(["tltrain", *flags, "--export_tflite=int8", "--quantize_samples=4",
                                         "--allow_accuracy_drop"]))
    assert (tmp_path / tflite.file_name("int8")).exists()


def main_error(*args: str) -> str:
    """The one-line message main exits with."""
    main_lib.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as exit_info:
        main_lib.main(main_lib._parse_flags(["tltrain", *args]))
    message = str(exit_info.value.code)
    assert "\n" not in message, message
    return message


def test_predict_from_checkpoint_and_from_export_only_match_in_process(trained, images, tmp_path):
    model_dir, paths = trained
    folder, files = images
    expected, _ = in_process_probabilities(model_dir, files)
    listed = predict.image_paths([files[0], str(folder / "green.png"), str(folder / "more")])
    assert listed == files
    from_checkpoint, names, failures = predict.predict(str(model_dir), listed)
    assert failures == {}
    np.testing.assert_allclose(from_checkpoint, expected, atol=1e-5)
    assert names == ["red", "green", "blue"]
    export_only = tmp_path / "deployed"
    shutil.copytree(model_dir / "export", export_only)
    from_export, names, _ = predict.predict(str(export_only), listed)
    np.testing.assert_allclose(from_export, expected, atol=1e-5)
    line = predict.format_top_k("x.jpg", from_export[0], names, 2)
    assert line.startswith("x.jpg: red ") and line.count(",") == 1
    with pytest.raises(FileNotFoundError, match="nothing.jpg: no such file"):
        predict.image_paths([str(folder / "nothing.jpg")])


def test_predict_reports_each_bad_file_and_predicts_every_good_one(trained, images, tmp_path, tltrain_log):
    """An empty file, text named .jpg and a JPEG cut in half, between good images: every good file gets the
    probabilities it gets alone, each bad one a line with its reason, and the count of failures comes back."""
    model_dir, _ = trained
    _, files = images
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture")
    whole = open(files[0], "rb").read()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    bad = [str(tmp_path / name) for name in ("empty.png", "notes.jpg", "cut.jpg")]
    mixed = [files[0], bad[0], files[1], bad[1], bad[2], files[2]]
    expected, _ = in_process_probabilities(model_dir, files)
    probabilities, _, failures = predict.predict(str(model_dir), mixed)
    np.testing.assert_allclose(probabilities[[0, 2, 5]], expected, atol=1e-5)
    assert np.isnan(probabilities[[1, 3, 4]]).all() and sorted(failures) == sorted(bad)
    assert "cannot identify image file" in failures[bad[0]] and "cannot identify" in failures[bad[1]]
    assert failures[bad[2]]  # TensorFlow's decode error for the truncated JPEG
    assert predict.print_predictions(str(model_dir), mixed, 1) == 3
    out, err = tltrain_log.read(logging.INFO), tltrain_log.read(logging.WARNING)
    assert [line.split(":")[0] for line in out.splitlines()] == [files[0], files[1], files[2]]
    assert [line.split(": not predicted: ")[0] for line in err.splitlines()[:3]] == bad
    assert err.splitlines()[3] == "3 of 6 files could not be predicted"


def test_evaluate_writes_metrics_per_class_report_and_confusion_matrix(trained, color_records):
    model_dir, _ = trained
    cfg, split = evaluate.prepare(str(model_dir))
    assert split == "validation"  # the colour records have no test split
    report = evaluate.evaluate(cfg, split, tf.distribute.get_strategy())
    confusion = np.array(report["confusion_matrix"])
    assert confusion.sum() == report["count"] == 36 and confusion.sum(axis=1).tolist() == [12, 12, 12]
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 36)
    for i, name in enumerate(["red", "green", "blue"]):
        per_class = report["per_class"][name]
        assert per_class["recall"] == pytest.approx(confusion[i, i] / 12)
        assert per_class["support"] == 12
    assert json.loads((model_dir / evaluate.REPORT_FILE).read_text()) == report
    png = Image.open(io.BytesIO((model_dir / evaluate.CONFUSION_FILE).read_bytes()))
    assert png.size[0] > 100 and png.size[1] > 100
    assert list((model_dir / "evaluation").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="--eval_split=test: the records"):
        evaluate.prepare(str(model_dir), split="test")


def test_classification_report_handles_classes_never_predicted():
    confusion = np.array([[3, 1, 0], [0, 0, 2], [0, 0, 0]])
    report = evaluate.classification_report(confusion, ["a", "b", "c"])
    assert report["a"] == {"precision": 1.0, "recall": 0.75, "f1": pytest.approx(6 / 7), "support": 4}
    assert report["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert report["c"]["support"] == 0 and report["c"]["precision"] == 0.0


def test_confusion_heatmap_shades_each_cell_by_its_share_of_the_true_class():
    confusion = np.array([[3, 1, 0], [0, 0, 2], [0, 0, 0]])
    picture = evaluate.confusion_heatmap(confusion)
    cell = 256 // 3
    assert picture.shape == (1, 3 * cell, 3 * cell, 3) and picture.dtype == np.uint8
    centre = picture[0, cell // 2::cell, cell // 2::cell, 0]  # red falls as the blue deepens
    assert centre[1, 2] == 8 and centre[2].tolist() == [247] * 3  # all of class b; a class never seen
    assert centre[0, 1] > centre[0, 0] > centre[1, 2] and centre[0, 2] == 247


@pytest.mark.slow
def test_saved_model_cli_and_predict_command_line(trained, images, tmp_path):
    model_dir, paths = trained
    folder, files = images
    expected, _ = in_process_probabilities(model_dir, files[:1])
    inputs = tmp_path / "in.npy"
    np.save(inputs, np.array([open(files[0], "rb").read()], dtype=object), allow_pickle=True)
    cli = subprocess.run([console_tools.find("saved_model_cli") or "saved_model_cli", "run", "--dir", paths["saved_model"], "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs", f"image_bytes={inputs}"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-2000:]
    printed = cli.stdout.split("Result for output key probabilities:")[1]
    values = np.array([float(v) for v in printed.replace("[", " ").replace("]", " ").split()])
    np.testing.assert_allclose(values, expected[0], atol=1e-5)

    (tmp_path / "notes.jpg").write_text("not a picture")
    command = subprocess.run([sys.executable, "-m", "tltrain.predict", f"--model_dir={model_dir}", "--top_k=2",
                              str(folder), str(tmp_path / "notes.jpg")], capture_output=True, text=True, timeout=120)
    assert command.returncode == 1, command.stderr[-2000:]  # one file failed, every other one is predicted
    assert f"{tmp_path / 'notes.jpg'}: not predicted: not an image Pillow can read" in command.stderr
    top1 = dict(line.split(": ")[0:2] for line in command.stdout.strip().splitlines())
    assert list(top1) == sorted(files)  # a folder is listed recursively, in sorted order
    assert {path: top1[path].split()[0] for path in files} == dict(zip(files, ["red", "green", "blue"]))


def test_int8_keeps_its_worst_layers_float_when_it_disagrees_with_float32(trained, color_records, tmp_path):
    model_dir, _ = trained
    _, model, _ = run_dir.load_trained(str(model_dir))
    pixels_model = str(tmp_path / "pixels")
    export.write_pixels_model(model, 32, pixels_model)
    validation, _ = validation_pixels(color_records)
    expected = model(validation, training=False).numpy()
    full = tflite.convert(pixels_model, "int8", validation)
    assert tflite.quantize_int8(pixels_model, validation, validation, max_disagreement=0.5) == (full, [])
    # A budget no model meets: every layer the debugger ranks is tried float, worst first, and in the end all of
    # them are: the probabilities come closer to float32's (one run: largest error 6.2e-3 -> 5.8e-4, another left
    # 2.4e-3: the ops it does not rank stay quantized), and the float weights make the file larger.
    quantized, kept = tflite.quantize_int8(pixels_model, validation, validation, max_disagreement=-1.0)
    assert len(kept) > 3 and all(isinstance(name, str) for name in kept)
    error_full = np.abs(tflite.Classifier(full)(validation) - expected).max()
    error_kept = np.abs(tflite.Classifier(quantized)(validation) - expected).max()
    assert error_kept < error_full and len(full) < len(quantized)
