"""tltrain.dataset_metadata: dataset.json round trip, subsets, and one-line errors for files that cannot work."""

import json

import pytest

from tltrain.dataset_metadata import DatasetMetadata, MetadataError, Shard

SPLITS = {"train": ([3, 2], [Shard("train-00000-of-00001.tfrecord", 5)]),
          "validation": ([1, 1], [Shard("validation-00000-of-00001.tfrecord", 2)])}


def test_write_read_round_trip_and_subset(tmp_path):
    metadata = DatasetMetadata.build(["cat", "dog"], SPLITS, "abc", compression="GZIP", provenance={"seed": 3})
    metadata.write(str(tmp_path))
    read = DatasetMetadata.read(str(tmp_path))
    assert read == metadata and read.num_classes == 2 and read.provenance == {"seed": 3}
    assert read.shard_paths("validation") == [str(tmp_path / "validation-00000-of-00001.tfrecord")]
    assert json.loads((tmp_path / "dataset.json").read_text())["splits"]["train"]["count"] == 5
    part = read.subset("train", [Shard("train-00000-of-00001.tfrecord", 2)], [1, 1], "max_per_class=1")
    assert part.splits["train"].count == 2 and part.splits["train"].digest != read.splits["train"].digest
    assert part.splits["validation"] == read.splits["validation"] and part.digest != read.digest
    with pytest.raises(ValueError, match=r"dataset.json: no split 'test' \(splits: train, validation\)"):
        read.shard_paths("test")


def test_a_file_written_before_split_digests_gets_the_same_ones(tmp_path):
    metadata = DatasetMetadata.build(["cat", "dog"], SPLITS, "abc")
    old = metadata.to_json()
    for split in old["splits"].values():
        del split["digest"]
    (tmp_path / "dataset.json").write_text(json.dumps(old))
    assert DatasetMetadata.read(str(tmp_path)) == metadata


@pytest.mark.parametrize("content, message", [
    ("{}", "not a dataset.json"),
    ('{"class_names": ["a"], "spl', "not valid JSON"),
    (b"\xff\xfe{", "not valid JSON"),
    ('{"class_names": ["a", "b"]}', "no splits"),
    ('{"class_names": ["a"], "splits": {"train": {"count": 3, "per_class": [2], "shards": []}}}', "counts disagree"),
    ('{"class_names": ["a"], "splits": {"train": {"count": 1}}}', "split 'train' is malformed"),
    ('[1, 2]', "not a dataset.json"),
])
def test_unusable_files_give_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "dataset.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MetadataError) as raised:
        DatasetMetadata.read(str(tmp_path))
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)
    with pytest.raises(FileNotFoundError, match="no dataset.json"):
        DatasetMetadata.read(str(tmp_path / "missing"))
