"""tltrain.data: batches, labels, sharding over input pipelines, exactly-once evaluation, TFDS, tf.data service."""

import io
import logging
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tltrain import data, data_service, records
from tltrain.config import DataConfig
from tltrain.dataset_metadata import DatasetMetadata, Shard

SIZE = 24  # output image size of every pipeline here


def solid_image(index: int, label: int, image_format: str, height: int = 30, width: int = 40) -> bytes:
    """A flat colour that survives JPEG, crops and resizes: red encodes the example index, green the label."""
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[...] = (10 * index, 60 + 80 * label, 128)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format.upper())
    return buffer.getvalue()


def decode_solid(image: np.ndarray) -> tuple[int, int]:
    """(index, label) back from a solid_image, from the mean colour of the (cropped, resized) picture."""
    red, green, _ = image.reshape(-1, 3).mean(axis=0)
    return int(round(red / 10)), int(round((green - 60) / 80))


def write_records(out, splits: dict[str, tuple[int, int]], compression: str = "") -> str:
    """splits: name -> (examples, shards). Example i of a split has label i % 3, shards take every n-th."""
    layout = {}
    for split, (count, num_shards) in splits.items():
        shards = []
        for shard in range(num_shards):
            name = records.shard_name(split, shard, num_shards)
            indices = list(range(shard, count, num_shards))
            with records.RecordWriter(str(out / name), compression) as writer:
                for i in indices:
                    image_format = "jpeg" if i % 2 else "png"
                    writer.write(records.encode_example(
                        encoded=solid_image(i, i % 3, image_format, height=30 + i % 7), image_format=image_format,
                        label=i % 3, class_name=f"c{i % 3}", height=30 + i % 7, width=40, channels=3,
                        filename=f"{split}/{i}.{image_format}", source_id=str(i)))
            shards.append(Shard(name, len(indices)))
        layout[split] = ([len(range(c, count, 3)) for c in range(3)], shards)
    DatasetMetadata.build(["c0", "c1", "c2"], layout, f"test {splits}", compression=compression).write(str(out))
    return str(out)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """train: 24 examples in 4 shards; validation: 11 in 2 shards; test: 7 in 1 shard."""
    return write_records(tmp_path_factory.mktemp("records"), {"train": (24, 4), "validation": (11, 2), "test": (7, 1)})


def contexts(num_pipelines: int, replicas: int):
    return [tf.distribute.InputContext(num_input_pipelines=num_pipelines, input_pipeline_id=i,
                                       num_replicas_in_sync=replicas) for i in range(num_pipelines)]


def seen(dataset, batches: int) -> list[tuple[int, int, int]]:
    """(index, label from the pixels, label from the pipeline) of every image in the first `batches` batches."""
    result = []
    for images, labels in dataset.take(batches):
        for image, label in zip(images.numpy(), labels.numpy()):
            result.append((*decode_solid(image), int(label)))
    return result


def test_dataset_info_reads_dataset_json(records_dir):
    info = data.dataset_info(DataConfig(records_dir=records_dir))
    assert info.class_names == ("c0", "c1", "c2") and info.num_classes == 3
    assert info.split_counts == {"train": 24, "validation": 11, "test": 7}
    assert info.class_counts["validation"] == (4, 4, 3)
    assert data.eval_steps(DataConfig(records_dir=records_dir, batch_size=4), "validation") == 3


def test_train_batches_are_uint8_with_the_right_labels_forever(records_dir):
    cfg = DataConfig(records_dir=records_dir, batch_size=8, shuffle_buffer=4)
    dataset = data.make_train_dataset(cfg, SIZE)
    assert dataset.element_spec == (tf.TensorSpec([8, SIZE, SIZE, 3], tf.uint8), tf.TensorSpec([8], tf.int32))
    assert_three_epochs(seen(dataset, 9))  # 72 images: the dataset repeats


def assert_three_epochs(examples):
    """72 images from the 24-image train split; a shuffle buffer of 4 delays a few across epoch ends."""
    assert len(examples) == 72
    assert all(pixel_label == label == index % 3 for index, pixel_label, label in examples)
    counts = np.bincount([index for index, _, _ in examples], minlength=24)
    assert len(counts) == 24 and counts.min() >= 2, counts


def test_cached_training_gives_the_same_examples(records_dir):
    cfg = DataConfig(records_dir=records_dir, batch_size=8, shuffle_buffer=4, cache=True)
    assert_three_epochs(seen(data.make_train_dataset(cfg, SIZE), 9))


def test_two_input_pipelines_read_disjoint_shards(records_dir):
    # A shuffle buffer of 1 so each pipeline's first epoch (3 batches of 4) is all of its 12 examples; a bigger
    # buffer can delay one past any fixed number of batches and make this test flaky.
    cfg = DataConfig(records_dir=records_dir, batch_size=8, shuffle_buffer=1)
    per_pipeline = [{index for index, _, _ in seen(data.make_train_dataset(cfg, SIZE, context), 8)}
                    for context in contexts(2, replicas=2)]
    # Four shards of every 4th example: pipeline 0 reads shards 0 and 2, pipeline 1 shards 1 and 3.
    assert per_pipeline[0] == {i for i in range(24) if i % 4 in (0, 2)}
    assert per_pipeline[1] == {i for i in range(24) if i % 4 in (1, 3)}


def test_fewer_shards_than_pipelines_falls_back_to_example_sharding(records_dir, caplog):
    # The 1-shard split; a shuffle buffer of 1 (as above) so each pipeline's first epoch is all of its examples.
    cfg = DataConfig(records_dir=records_dir, batch_size=4, train_split="test", shuffle_buffer=1)
    with caplog.at_level(logging.WARNING, logger="tltrain.data"):
        per_pipeline = [{index for index, _, _ in seen(data.make_train_dataset(cfg, SIZE, context), 6)}
                        for context in contexts(2, replicas=2)]
    assert "sharding by example" in caplog.text
    assert per_pipeline[0].isdisjoint(per_pipeline[1]) and per_pipeline[0] | per_pipeline[1] == set(range(7))


@pytest.mark.parametrize("num_pipelines,replicas,batch_size", [(1, 1, 4), (2, 2, 4), (2, 4, 8), (1, 2, 6)])
def test_eval_sees_every_example_exactly_once(records_dir, num_pipelines, replicas, batch_size):
    cfg = DataConfig(records_dir=records_dir, batch_size=batch_size)
    steps = data.eval_steps(cfg, "validation")
    assert steps == math.ceil(11 / batch_size)
    real, padding, batch_counts = [], 0, []
    for context in contexts(num_pipelines, replicas):
        batches = list(data.make_eval_dataset(cfg, SIZE, "validation", context))
        batch_counts.append(len(batches))
        for images, labels in batches:
            assert images.shape == (batch_size // replicas, SIZE, SIZE, 3) and images.dtype == tf.uint8
            for image, label in zip(images.numpy(), labels.numpy()):
                if label == -1:
                    padding += 1
                    assert not image.any()
                else:
                    index, pixel_label = decode_solid(image)
                    assert pixel_label == label == index % 3
                    real.append(index)
    assert sorted(real) == list(range(11))  # none dropped, none twice
    # Every pipeline yields the batches its replicas consume in eval_steps steps, and no more.
    assert batch_counts == [steps * replicas // num_pipelines] * num_pipelines
    assert padding == steps * batch_size - 11


def test_eval_is_the_plain_centre_crop_in_file_order(records_dir):
    """No augmentation, no randomness in evaluation: exactly decode_for_eval of each record, in order."""
    cfg = DataConfig(records_dir=records_dir, batch_size=4)
    images = np.concatenate([x.numpy() for x, _ in data.make_eval_dataset(cfg, SIZE, "validation")])[:11]
    files = [f"{records_dir}/{records.shard_name('validation', i, 2)}" for i in range(2)]
    expected = [data.decode_for_eval(records.parse_example(r)["image/encoded"], SIZE, cfg.eval_crop_fraction)
                for r in tf.data.TFRecordDataset(files)]
    np.testing.assert_array_equal(images, np.stack(expected))


def test_gzip_records(tmp_path):
    records_dir = write_records(tmp_path, {"train": (6, 2), "validation": (5, 1)}, compression="GZIP")
    cfg = DataConfig(records_dir=records_dir, batch_size=2)
    assert all(p == label for _, p, label in seen(data.make_train_dataset(cfg, SIZE), 4))
    assert sorted(i for i, _, label in seen(data.make_eval_dataset(cfg, SIZE, "validation"), 10) if label >= 0) \
        == list(range(5))


def test_decode_for_eval_takes_the_centre_crop():
    pixels = np.zeros((60, 100, 3), np.uint8)
    pixels[...] = (255, 0, 0)  # a red frame ...
    pixels[10:50, 30:70] = (0, 0, 255)  # ... around a blue 40x40 centre
    for image_format in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, image_format, quality=95)
        image = data.decode_for_eval(tf.constant(buffer.getvalue()), 16, 0.5).numpy()  # 30x30 centre square
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        assert image[..., 2].min() > 200 and image[..., 0].max() < 60, image_format
        whole = data.decode_for_eval(tf.constant(buffer.getvalue()), 16, 1.0).numpy()  # 60x60: the frame shows
        assert whole[..., 0].max() > 200


@pytest.mark.parametrize("image_size", [16, 40, 100])  # JPEG decoded at 1/8, 1/4 and full scale
def test_large_jpegs_decode_at_a_reduced_scale_to_the_same_picture(image_size):
    y, x = np.mgrid[0:320, 0:320]
    pixels = np.stack([x * 255 // 320, y * 255 // 320, (x + y) * 255 // 640], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    ours = data.decode_for_eval(tf.constant(buffer.getvalue()), image_size, 1.0).numpy().astype(float)
    reference = tf.image.resize(pixels.astype(np.float32), [image_size, image_size], antialias=True).numpy()
    assert np.abs(ours - reference).mean() < 2.0


def test_predict_dataset_decodes_files_like_eval(tmp_path):
    paths = []
    for i, image_format in enumerate(["JPEG", "PNG", "TIFF", "BMP", "JPEG"]):
        path = tmp_path / f"{i}.{image_format.lower()}"
        Image.fromarray(np.full((30, 40, 3), (10 * i, 60, 128), np.uint8)).save(path, image_format)
        paths.append(str(path))
    batches = list(data.make_predict_dataset(paths, SIZE, 0.875, batch_size=2))
    assert [images.shape[0] for _, images in batches] == [2, 2, 1]
    assert np.concatenate([indices.numpy() for indices, _ in batches]).tolist() == [0, 1, 2, 3, 4]
    images = np.concatenate([b.numpy() for _, b in batches])
    assert [decode_solid(image)[0] for image in images] == [0, 1, 2, 3, 4]  # in order, TIFF through Pillow
    np.testing.assert_array_equal(images[0], data.decode_for_eval(tf.io.read_file(paths[0]), SIZE, 0.875))


def test_predict_turns_exif_rotated_photos_upright(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red as stored; EXIF orientation 6 = rotate 90 clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    (image,) = next(iter(data.make_predict_dataset([str(path)], SIZE, 1.0, batch_size=1)))[1].numpy()
    assert image[:8, :, 0].mean() > 200 and image[-8:, :, 0].mean() < 50  # viewed upright: red on top


def test_predict_composites_transparency_on_white_like_the_converter(tmp_path):
    pixels = np.zeros((30, 30, 4), np.uint8)  # fully transparent black: the converter stores white
    path = tmp_path / "clear.png"
    Image.fromarray(pixels, "RGBA").save(path)
    (image,) = next(iter(data.make_predict_dataset([str(path)], SIZE, 1.0, batch_size=1)))[1].numpy()
    assert image.min() == 255


def test_bad_input_gives_one_line_errors(records_dir, tmp_path):
    with pytest.raises(ValueError, match=r"dataset.json: no split 'nope' \(splits: test, train, validation\)"):
        data.make_eval_dataset(DataConfig(records_dir=records_dir), SIZE, "nope")
    with pytest.raises(ValueError, match="exactly one of --records_dir and --tfds_name"):
        data.dataset_info(DataConfig())
    with pytest.raises(ValueError, match="--data_service=localhost:1: expected grpc://HOST:PORT"):
        data.make_train_dataset(DataConfig(records_dir=records_dir, data_service="localhost:1"), SIZE)
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such image file"):
        data.make_predict_dataset([str(tmp_path / "missing.jpg")], SIZE, 0.875, 1)
    (tmp_path / "notes.jpg").write_text("not a picture")
    assert list(data.make_predict_dataset([str(tmp_path / "notes.jpg")], SIZE, 0.875, 1)) == []  # left out
    assert data.predict_failure(str(tmp_path / "notes.jpg"), SIZE, 0.875).startswith("not an image Pillow can read")
    broken = write_records(tmp_path, {"train": (4, 2)})
    (tmp_path / records.shard_name("train", 1, 2)).unlink()
    with pytest.raises(FileNotFoundError, match=r"train-00001-of-00002.tfrecord: shard listed in dataset.json"):
        data.make_train_dataset(DataConfig(records_dir=broken), SIZE)


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = DataConfig(tfds_name="tf_flowers", batch_size=4)
    with tfds.testing.mock_data(num_examples=10):
        info = data.dataset_info(cfg)
        assert info.num_classes == 5 and info.class_names[0] == "dandelion"
        assert info.split_counts == {"train": 10} and sum(info.class_counts["train"]) == 10
        images, labels = next(iter(data.make_train_dataset(cfg, SIZE)))
        assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == tf.uint8 and labels.dtype == tf.int32
        labels = np.concatenate([y.numpy() for _, y in data.make_eval_dataset(cfg, SIZE, "train")])
        assert len(labels) == 12 and (labels >= 0).sum() == 10 and (labels == -1).sum() == 2


@pytest.mark.parametrize("mode", data_service.DATA_SERVICE_MODES)
def test_training_through_tf_data_service(records_dir, mode, tf_data_service):
    cfg = DataConfig(records_dir=records_dir, batch_size=8, shuffle_buffer=4,
                     data_service=tf_data_service, data_service_mode=mode)
    assert_three_epochs(seen(data.make_train_dataset(cfg, SIZE), 9))


def test_raw_pixel_records_round_trip_exactly(tmp_path):
    """Raw-pixel records (gray as Fashion-MNIST, and RGB) come back pixel for pixel through evaluation, training
    and the cache, mixed in one shard with an encoded PNG; gray is repeated over three channels."""
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (20, 20, channels), np.uint8) for channels in (1, 3, 3)]
    with records.RecordWriter(str(tmp_path / records.shard_name("train", 0, 1))) as writer:
        for i, pixels in enumerate(pictures):
            png = i == 2
            buffer = io.BytesIO()
            if png:
                Image.fromarray(pixels).save(buffer, "PNG")
            writer.write(records.encode_example(
                encoded=buffer.getvalue() if png else pixels.tobytes(), image_format="png" if png else records.RAW_FORMAT,
                label=i, class_name=f"c{i}", height=pixels.shape[0], width=pixels.shape[1], channels=pixels.shape[2],
                filename=f"{i}", source_id=str(i)))
    shards = [Shard(records.shard_name("train", 0, 1), 3)]
    DatasetMetadata.build(["c0", "c1", "c2"], {"train": ([1, 1, 1], shards)}, "raw pixels").write(str(tmp_path))
    expected = {i: np.broadcast_to(p, p.shape[:2] + (3,)) for i, p in enumerate(pictures)}
    whole = dict(eval_crop_fraction=1.0, crop_area_range=(1.0, 1.0), crop_aspect_range=(1.0, 1.0))
    for cache in (False, True):
        cfg = DataConfig(records_dir=str(tmp_path), batch_size=1, shuffle_buffer=1, cache=cache, **whole)
        for dataset in (data.make_eval_dataset(cfg, 20, "train"), data.make_train_dataset(cfg, 20)):
            labels = []
            for images, label in dataset.take(3):
                labels.append(int(label[0]))
                np.testing.assert_array_equal(images[0].numpy(), expected[labels[-1]])
            assert sorted(labels) == [0, 1, 2]
