"""Seeded subsets and by-image splits."""

import pytest

from keras_captioning.data import CaptionRecord, select_and_split
from keras_captioning.data.splits import split_sizes
from keras_captioning.errors import CaptioningError


def make_records(n, split="unsplit"):
    return [
        CaptionRecord(f"img{i:03d}", f"/x/{i}.jpg", [f"caption {i} a", f"caption {i} b"], split)
        for i in range(n)
    ]


def test_split_by_image_with_requested_sizes():
    records = make_records(50)
    result = select_and_split(records, num_images=20, ratios={"train": 0.7, "val": 0.3}, seed=3)
    by_split = {name: [r for r in result if r.split == name] for name in ("train", "val")}
    assert [len(by_split["train"]), len(by_split["val"])] == [14, 6]
    ids = [r.image_id for r in result]
    assert len(set(ids)) == 20  # no image in two splits
    originals = {r.image_id: r.captions for r in records}
    assert all(r.captions == originals[r.image_id] for r in result)  # captions travel with their image
    assert {r.split for r in records} == {"unsplit"}  # inputs untouched


def test_deterministic_for_a_seed_and_independent_of_input_order():
    records = make_records(30)
    ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
    first = select_and_split(records, 12, ratios, seed=7)
    assert select_and_split(list(reversed(records)), 12, ratios, seed=7) == first
    assert select_and_split(records, 12, ratios, seed=8) != first


def test_none_ratios_keep_dataset_split_and_none_num_images_keeps_all():
    records = make_records(4, split="train") + [CaptionRecord("zz", "/z.jpg", ["c"], "test")]
    result = select_and_split(records, ratios=None)
    assert sorted((r.image_id, r.split) for r in result) == sorted((r.image_id, r.split) for r in records)


def test_too_many_images_is_an_error():
    with pytest.raises(CaptioningError, match="num_images: 11 requested but 10 images are available"):
        select_and_split(make_records(10), num_images=11)


def test_repeated_image_ids_are_an_error():
    with pytest.raises(CaptioningError, match="image ids repeat"):
        select_and_split(make_records(2) + make_records(1))


@pytest.mark.parametrize(
    ("n", "ratios", "expected"),
    [
        (10, {"train": 0.7, "val": 0.3}, {"train": 7, "val": 3}),
        (7, {"train": 0.8, "val": 0.1, "test": 0.1}, {"train": 5, "val": 1, "test": 1}),
        (3, {"train": 0.9, "val": 0.05, "test": 0.05}, {"train": 1, "val": 1, "test": 1}),
        (2, {"train": 0.9, "val": 0.05, "test": 0.05}, {"train": 1, "val": 1, "test": 0}),
        (5, {"train": 1.0, "val": 0.0}, {"train": 5, "val": 0}),
        (6000, {"train": 0.7, "val": 0.3}, {"train": 4200, "val": 1800}),
    ],
)
def test_split_sizes_rounding(n, ratios, expected):
    assert split_sizes(n, ratios) == expected


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ({"train": 0.7, "val": 0.2}, "fractions must sum to 1"),
        ({"train": 1.5, "val": -0.5}, "must be numbers >= 0"),
        ({}, "give at least one split"),
    ],
)
def test_bad_ratios(ratios, message):
    with pytest.raises(CaptioningError, match=message):
        select_and_split(make_records(5), ratios=ratios)
