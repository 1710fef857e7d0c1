"""Shard example format: serialize -> ExampleDecoder -> ExampleParser, and read_manifest."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_captioning.data import tfrecords
from keras_captioning.data.shards import read_manifest
from keras_captioning.data.tfrecords import ExampleDecoder, ExampleParser, serialize_example
from keras_captioning.errors import CaptioningError


def _example(dtype="float16"):
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(4, 3)).astype(dtype)
    captions = ["a red circle", "Ünïcode café", ""]
    ids = [[2, 5, 6, 7, 3], [2, 8, 3], [2, 3]]
    return grid, captions, ids


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("declared", [True, False])
def test_round_trip(dtype, declared):
    grid, captions, ids = _example(dtype)
    data = serialize_example("img-1", grid, captions, ids)
    decoder = ExampleDecoder(dtype, grid.shape) if declared else ExampleDecoder()
    out = decoder(tf.constant(data))
    assert out["image_id"].numpy() == b"img-1"
    assert out["grid"].dtype == tf.float32 and out["pooled"].dtype == tf.float32
    np.testing.assert_array_equal(out["grid"].numpy(), grid.astype("float32"))
    # pooled is not stored: it is the stored grid's mean, in float32
    assert b"features/pooled" not in data
    np.testing.assert_allclose(out["pooled"].numpy(), grid.astype("float32").mean(axis=0), rtol=1e-6)
    assert [c.decode("utf-8") for c in out["captions"].numpy()] == captions
    assert out["caption_ids"].dtype == tf.int32
    np.testing.assert_array_equal(out["caption_ids"].numpy(), [[2, 5, 6, 7, 3], [2, 8, 3, 0, 0], [2, 3, 0, 0, 0]])
    np.testing.assert_array_equal(out["caption_lengths"].numpy(), [5, 3, 2])
    if declared:
        assert out["grid"].shape == (4, 3)


def test_decoder_in_a_dataset_and_keys():
    grid, captions, ids = _example()
    data = serialize_example(7, grid, captions, ids)
    ds = tf.data.Dataset.from_tensors(data).map(ExampleDecoder("float16", (4, 3), keys=("pooled",)))
    assert "grid" not in ds.element_spec and ds.element_spec["pooled"].shape == (3,)
    (out,) = list(ds)
    assert out["image_id"].numpy() == b"7"


def test_parser_train_and_eval_paths():
    grid, captions, ids = _example()
    decoded = ExampleDecoder("float16", (4, 3))(tf.constant(serialize_example("x", grid, captions, ids)))
    parser = ExampleParser("grid", max_length=4)
    kept, lengths = parser.nonempty_captions(decoded)
    assert kept.shape[0] == 2 and lengths.numpy().tolist() == [5, 3]  # [<start>, <end>] dropped
    long = parser.train_example(parser.features(decoded), kept[0], lengths[0])
    short = parser.train_example(parser.features(decoded), kept[1], lengths[1])
    assert long["captions"].numpy().tolist() == [2, 5, 6, 3]  # truncated like Vocabulary.encode
    assert short["captions"].numpy().tolist() == [2, 8, 3]
    assert long["features"].shape == (4, 3)
    evaluation = ExampleParser("pooled").eval_example(decoded)
    assert evaluation["features"].shape == (3,) and evaluation["references"].shape == (3,)
    with pytest.raises(CaptioningError, match="feature"):
        ExampleParser("region")


@pytest.mark.parametrize("declared", [True, False])
def test_decode_batch_and_caption_rows_match_the_per_example_path(declared):
    examples = [_example(dtype) for dtype in ("float16", "float16")]
    data = tf.constant([serialize_example(str(i), *e) for i, e in enumerate(examples)])
    decoder = ExampleDecoder("float16" if declared else None, (4, 3))
    out = decoder.decode_batch(data)
    assert out["grid"].dtype == (tf.float16 if declared else tf.float32)  # stored dtype, cast late
    assert out["grid"].shape == (2, 4, 3) and out["pooled"].dtype == tf.float32
    for row, (grid, _, ids) in enumerate(examples):
        np.testing.assert_array_equal(out["grid"][row].numpy().astype("float32"), grid.astype("float32"))
        np.testing.assert_allclose(out["pooled"][row].numpy(), grid.astype("float32").mean(axis=0), rtol=1e-6)
        assert out["caption_ids"][row].to_list() == ids
    image, rows, lengths = ExampleParser("grid", max_length=4).caption_rows(out["caption_ids"], 6)
    assert image.numpy().tolist() == [0, 0, 1, 1]  # the [<start>, <end>] captions are dropped
    assert rows.numpy().tolist() == [[2, 5, 6, 3, 0, 0], [2, 8, 3, 0, 0, 0]] * 2  # max_length keeps <end> last
    assert lengths.numpy().tolist() == [4, 3, 4, 3]
    _, rows, lengths = ExampleParser("grid").caption_rows(out["caption_ids"], 5)
    assert rows.numpy().tolist()[0] == [2, 5, 6, 7, 3] and lengths.numpy().tolist() == [5, 3, 5, 3]


def test_serialize_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        serialize_example("x", np.zeros((2, 2, 2), "float16"), [], [])
    with pytest.raises(ValueError, match="caption texts"):
        serialize_example("x", np.zeros((2, 2), "float16"), ["a"], [])


def test_read_manifest_errors(tmp_path):
    with pytest.raises(CaptioningError, match="manifest not found; run the features step"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.worker-0-of-2.json").write_text("{}")
    with pytest.raises(CaptioningError, match="1 worker manifest"):
        read_manifest(tmp_path)
    path = tmp_path / "manifest.json"
    path.write_text("{ not json")
    with pytest.raises(CaptioningError, match="unreadable feature manifest"):
        read_manifest(tmp_path)
    path.write_text(json.dumps({"backbone": "x"}))
    with pytest.raises(CaptioningError, match="not a keras-captioning feature manifest"):
        read_manifest(tmp_path)
    path.write_text(json.dumps({"format": tfrecords.MANIFEST_FORMAT, "format_version": tfrecords.FORMAT_VERSION,
                                "dtype": "int8", "grid_shape": [64],
                                "counts": {}, "shards": {}}))
    with pytest.raises(CaptioningError, match="dtype.*grid_shape"):
        read_manifest(tmp_path)
    good = {"format": tfrecords.MANIFEST_FORMAT, "format_version": tfrecords.FORMAT_VERSION, "dtype": "float16",
            "grid_shape": [64, 38], "counts": {}, "shards": {}}
    path.write_text(json.dumps(good))
    assert read_manifest(tmp_path) == good
    path.write_text(json.dumps({**good, "format_version": 1}))  # shards of an older package version
    with pytest.raises(CaptioningError, match="shards in format 1, this package reads format 3; rerun the "
                                              "features step with --overwrite"):
        read_manifest(tmp_path)
