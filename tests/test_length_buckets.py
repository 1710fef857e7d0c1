"""Length buckets: every caption once per epoch, only the configured widths, seeded and exact."""


import numpy as np
import pytest

from keras_captioning.data.pipeline import count_examples, make_train_dataset
from keras_captioning.errors import CaptioningError


@pytest.fixture(scope="module")
def shards(length_shards):
    return length_shards


def _rows(batches):
    width = max(b.shape[1] for b in batches)
    return [tuple(np.pad(b, ((0, 0), (0, width - b.shape[1])))[i]) for b in batches for i in range(len(b))]


def test_every_caption_once_per_epoch_with_bucket_widths_only(shards):
    pattern, manifest = shards
    widths = (5, 8, 11)
    reference = sorted(_rows([b["captions"].numpy() for b in make_train_dataset(pattern, 8, shuffle=False)]))
    dataset = make_train_dataset(pattern, 8, seed=3, shuffle_buffer=16, length_buckets=widths)
    seen_widths, epochs = set(), []
    for _ in range(2):
        batches = [b["captions"].numpy() for b in dataset]
        seen_widths |= {b.shape[1] for b in batches}
        # padded to the smallest bucket width that holds the batch's longest caption
        for b in batches:
            longest = int((b != 0).sum(axis=1).max())
            assert b.shape[1] == min(w for w in (*widths, 16) if w >= longest)
        epochs.append(_rows(batches))
        assert sorted(epochs[-1]) == reference  # each caption exactly once
    assert len(reference) == count_examples(manifest, "train", "all")
    assert seen_widths <= {5, 8, 11, manifest["longest_caption"]}
    assert epochs[0] != epochs[1]  # reshuffled each epoch


def test_buckets_cut_padding_and_are_seeded(shards):
    pattern, _ = shards
    def padded(ds):
        return sum(int(b["captions"].shape[0] * b["captions"].shape[1]) for b in ds)
    plain = make_train_dataset(pattern, 8, seed=1, max_length=None)
    bucketed = make_train_dataset(pattern, 8, seed=1, length_buckets=(5, 8, 11))
    assert padded(bucketed) < padded(plain)
    first = [b["captions"].numpy().tolist() for b in make_train_dataset(pattern, 8, seed=4, length_buckets=(5, 8))]
    again = [b["captions"].numpy().tolist() for b in make_train_dataset(pattern, 8, seed=4, length_buckets=(5, 8))]
    assert first == again


@pytest.mark.parametrize("layout", ["caption", "image"])
def test_a_batch_holds_one_bucket_until_the_epoch_ends(shards, layout):
    # Each bucket emits only whole batches and carries its remainder to the next window, so
    # a batch never mixes two buckets' captions (the final flush, one batch per bucket at
    # most, may). Image-major: an image's captions are in the bucket of its longest.
    pattern, _ = shards
    widths = (5, 8, 11, 16)
    dataset = make_train_dataset(pattern, 4, seed=2, shuffle_buffer=8, length_buckets=widths[:-1],
                                 batch_layout=layout)
    batches = list(dataset)
    assert len(batches) > 3 * len(widths)  # several windows

    def bucket(length):
        return min(i for i, w in enumerate(widths) if w >= length)

    def rows(b):  # (image key, caption length) per caption row; an image is known by its features
        lengths = (b["captions"].numpy() != 0).sum(axis=1)
        features = b["features"].numpy()
        index = b["image_index"].numpy() if layout == "image" else np.arange(len(lengths))
        return [(features[g].tobytes(), int(n)) for g, n in zip(index, lengths)]

    longest = {}  # image -> its longest caption over the epoch (an image-major image may span two batches)
    for b in batches:
        for image, n in rows(b):
            longest[image] = max(n, longest.get(image, 0))
    mixed = []
    for i, b in enumerate(batches):
        keys = {bucket(longest[image] if layout == "image" else n) for image, n in rows(b)}
        if len(keys) > 1:
            mixed.append(i)
    assert all(i >= len(batches) - len(widths) for i in mixed), (mixed, len(batches))


@pytest.mark.parametrize("bad", [(), (8, 5), (1, 4), (4, 4)])
def test_bad_widths_are_refused(shards, bad):
    pattern, _ = shards
    with pytest.raises(CaptioningError, match="length_buckets"):
        make_train_dataset(pattern, 8, length_buckets=bad)
