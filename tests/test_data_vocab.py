"""Caption normalization and the Vocabulary."""

import json

import numpy as np
import pytest

from keras_captioning.data import Vocabulary, normalize_caption
from keras_captioning.errors import CaptioningError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A man's DOG, running!", "a mans dog running"),
        ("  two\tcats \n on   a mat . ", "two cats on a mat"),
        ("It\u2019s a dog-friendly caf\u00e9", "its a dog friendly caf"),
        ("\uff21\uff22\uff23 full-width 123", "abc full width 123"),
        ("\U0001f436\U0001f431 \u2615", ""),
        ("", ""),
    ],
)
def test_normalize_caption(raw, expected):
    assert normalize_caption(raw) == expected


@pytest.fixture
def vocab():
    # counts: a 4, dog 2, cat 2, runs 1, sits 1
    return Vocabulary.build(["A dog runs.", "a cat sits", "A DOG", "a cat"], max_words=3)


def test_ids_frequency_then_alphabetical_and_top_k(vocab):
    assert vocab.id_to_word == ["<pad>", "<unk>", "<start>", "<end>", "a", "cat", "dog"]
    assert (vocab.pad_id, vocab.unk_id, vocab.start_id, vocab.end_id) == (0, 1, 2, 3)
    assert len(vocab) == 7
    assert vocab.word_to_id["dog"] == 6
    assert vocab.counts == {"a": 4, "dog": 2, "runs": 1, "cat": 2, "sits": 1}
    assert len(Vocabulary.build(["a b c"], max_words=None)) == 7
    assert len(Vocabulary.build(["a b c"], max_words=0)) == 4


def test_encode_decode_with_unknown_words(vocab):
    ids = vocab.encode("A dog sits!")
    assert ids == [2, 4, 6, 1, 3]
    assert vocab.decode(ids) == "a dog <unk>"
    assert vocab.decode([2, 4, 5, 3, 6, 0]) == "a cat"  # stops at <end>
    assert vocab.decode(np.array([2, 4, 3, 0]), strip_special=False) == "<start> a <end> <pad>"
    with pytest.raises(ValueError, match="token id 99 is outside the vocabulary"):
        vocab.decode([99])


def test_truncation_keeps_start_and_end(vocab):
    assert vocab.encode("a dog a cat a dog", max_length=5) == [2, 4, 6, 4, 3]
    assert vocab.encode("a dog", max_length=4) == [2, 4, 6, 3]  # fits exactly: untouched
    with pytest.raises(CaptioningError, match="max_length: must be at least 2"):
        vocab.encode("a", max_length=1)


def test_encode_batch_pads_and_counts_truncations(vocab):
    batch, truncated = vocab.encode_batch(["a dog", "a cat a dog a cat", "dog"], max_length=5)
    assert batch.dtype == np.int32 and batch.shape == (3, 5)
    assert batch.tolist() == [[2, 4, 6, 3, 0], [2, 4, 5, 4, 3], [2, 6, 3, 0, 0]]
    assert truncated == 1
    batch, truncated = vocab.encode_batch(["a dog", "dog"])
    assert batch.shape == (2, 4) and truncated == 0


def test_unicode_and_very_long_captions_do_not_crash(vocab):
    assert vocab.encode("\U0001f436 \u2615 \u00e9\u00e9") == [2, 3]
    long_caption = " ".join(["dog"] * 1000)
    assert len(vocab.encode(long_caption)) == 1002
    batch, truncated = vocab.encode_batch([long_caption, "\U0001f436"], max_length=20)
    assert batch.shape == (2, 20) and truncated == 1 and batch[0, -1] == vocab.end_id


def test_save_load_round_trip_and_fingerprint(vocab, tmp_path):
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.fingerprint() == vocab.fingerprint() and len(vocab.fingerprint()) == 64
    assert json.loads(path.read_text())["version"] == 1
    assert Vocabulary.build(["a b"]).fingerprint() != vocab.fingerprint()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"not valid JSON \(line 1 column 2\)"),
        ('{"format": "other"}', "not a vocabulary file"),
        (
            '{"format": "keras_captioning.vocabulary", "version": 99, "id_to_word": []}',
            "format version 99 is not supported",
        ),
        (
            '{"format": "keras_captioning.vocabulary", "version": 1, "id_to_word": ["a"]}',
            "id_to_word must start with",
        ),
        (
            '{"format": "keras_captioning.vocabulary", "version": 1, "id_to_word": [1, 2]}',
            "'id_to_word' must be a list of strings",
        ),
        (
            '{"images": [], "annotations": [{"image_id": 1, "caption": "x"}]}',
            "looks like a COCO captions file",
        ),
    ],
)
def test_load_malformed_file_names_it(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CaptioningError, match=f"vocab.json: .*{message}"):
        Vocabulary.load(path)


def test_load_detects_edited_file(vocab, tmp_path):
    path = tmp_path / "vocab.json"
    vocab.save(path)
    data = json.loads(path.read_text())
    data["id_to_word"][4], data["id_to_word"][5] = data["id_to_word"][5], data["id_to_word"][4]
    path.write_text(json.dumps(data))
    with pytest.raises(CaptioningError, match="fingerprint does not match"):
        Vocabulary.load(path)
    with pytest.raises(CaptioningError, match="missing.json: file not found"):
        Vocabulary.load(tmp_path / "missing.json")
