"""Shared test setup: quiet TensorFlow logs, and fixtures used by several test files."""

import pathlib

import pytest

import tltrain  # noqa: F401  (first: TensorFlow's start-up settings and quiet start-up, as in every entry point)

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


def write_color_records(out_dir: pathlib.Path, per_class: dict[str, int], size: int = 40, seed: int = 0) -> pathlib.Path:
    """A learnable tiny records dir: class i's images are noisy pictures dominated by colour channel i (red,
    green, blue), half JPEG and half PNG, written in the real schema with a dataset.json (two train shards)."""
    import hashlib
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from tltrain import records
    from tltrain.dataset_metadata import DatasetMetadata, Shard

    class_names = ["red", "green", "blue"]
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits, digest = {}, hashlib.sha256()
    for split, count in per_class.items():
        examples = []
        for label in range(len(class_names)):
            for i in range(count):
                pixels = rng.integers(0, 120, size=(size, size + 8, 3))
                pixels[..., label] += 100 + rng.integers(0, 35)
                y, x = rng.integers(0, size // 2, size=2)
                pixels[y:y + size // 3, x:x + size // 3] = rng.integers(0, 255, size=3)  # a distracting square
                image_format = "jpeg" if i % 2 else "png"
                buffer = io.BytesIO()
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, image_format.upper())
                examples.append(records.encode_example(
                    encoded=buffer.getvalue(), image_format=image_format, label=label, class_name=class_names[label],
                    height=size, width=size + 8, channels=3, filename=f"{split}/{class_names[label]}/{i}.{image_format}",
                    source_id=hashlib.sha256(buffer.getvalue()).hexdigest()))
        order = rng.permutation(len(examples))
        num_shards = 2 if split == "train" else 1
        shards = []
        for shard in range(num_shards):
            name = records.shard_name(split, shard, num_shards)
            chosen = [examples[j] for j in order[shard::num_shards]]
            with records.RecordWriter(str(out_dir / name)) as writer:
                for example in chosen:
                    writer.write(example)
                    digest.update(example)
            shards.append(Shard(name, len(chosen)))
        splits[split] = ([count] * len(class_names), shards)
    provenance = {"seed": seed, "source": "tests/conftest.py"}
    DatasetMetadata.build(class_names, splits, digest.hexdigest(), provenance=provenance).write(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def color_records(tmp_path_factory) -> pathlib.Path:
    """Three colour classes: 32 training and 12 validation images each (see write_color_records)."""
    return write_color_records(tmp_path_factory.mktemp("color_records"), {"train": 32, "validation": 12})


@pytest.fixture
def tf_data_service():
    """An in-process tf.data service dispatcher and one worker, addressed on 127.0.0.1 only: grpc://127.0.0.1:PORT."""
    import tensorflow as tf

    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    worker = service.WorkerServer(service.WorkerConfig(dispatcher_address=address, worker_address="127.0.0.1:%port%"))
    try:
        yield f"grpc://127.0.0.1:{address.rsplit(':', 1)[1]}"
    finally:
        worker.stop()
        dispatcher.stop()


@pytest.fixture(autouse=True)
def tltrain_logger_as_found():
    """Each test starts with the "tltrain" logger as Python makes it: a test that runs a command line
    (tltrain.logs.show_on_console) leaves it printing to the console and not propagating."""
    import logging

    logger = logging.getLogger("tltrain")
    found = logger.propagate, list(logger.handlers), logger.level
    yield
    logger.propagate, logger.handlers[:] = found[0], found[1]
    logger.setLevel(found[2])


@pytest.fixture
def tltrain_log(caplog):
    """Reads what tltrain logged (INFO and up) since the last read: the lines its command line shows."""
    import logging

    logger = logging.getLogger("tltrain")
    caplog.set_level(logging.INFO, logger="tltrain")
    logger.addHandler(caplog.handler)
    logger.propagate = False  # else the root logger's capture would see every record a second time

    class Log:
        def read(self, level: int | None = None) -> str:
            """The lines logged and not read yet (those of `level` when given), one per line."""
            records = caplog.handler.records
            taken = [record for record in records if level is None or record.levelno == level]
            records[:] = [record for record in records if record not in taken]
            return "".join(f"{record.getMessage()}\n" for record in taken)

    return Log()
