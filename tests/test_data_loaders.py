"""Caption loaders (COCO, Karpathy, Flickr8k, dispatcher) and their robustness to bad input."""

import json
import logging
import re
import subprocess
import sys

import pytest

from keras_captioning.data import CaptionRecord, load_coco, load_dataset, load_flickr8k, load_karpathy
from keras_captioning.errors import CaptioningError


def touch_images(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def write_json(path, payload):
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def coco_payload(
    images=((1, "a.jpg"), (2, "b.jpg")), annotations=((1, "A dog runs."), (2, "A cat."), (1, "Dog!"))
):
    return {
        "images": [{"id": i, "file_name": f, "width": 10, "height": 10} for i, f in images],
        "annotations": [{"id": k, "image_id": i, "caption": c} for k, (i, c) in enumerate(annotations)],
    }


def karpathy_payload():
    def image(name, split, cocoid, captions, filepath="val2014"):
        sentences = [{"raw": c, "tokens": c.lower().split()} for c in captions]
        return {
            "filepath": filepath,
            "filename": name,
            "split": split,
            "cocoid": cocoid,
            "sentences": sentences,
        }

    return {
        "dataset": "coco",
        "images": [
            image("t.jpg", "train", 10, ["a train image"], filepath="train2014"),
            image("v.jpg", "val", 11, ["a val image", "second"]),
            image("r.jpg", "restval", 12, ["a restval image"]),
            image("s.jpg", "test", 13, ["a test image"]),
        ],
    }


@pytest.fixture
def coco(tmp_path):
    return write_json(tmp_path / "captions.json", coco_payload()), touch_images(
        tmp_path / "img", "a.jpg", "b.jpg"
    )


@pytest.fixture
def karpathy(tmp_path):
    touch_images(tmp_path / "train2014", "t.jpg")
    touch_images(tmp_path / "val2014", "v.jpg", "r.jpg", "s.jpg")
    return write_json(tmp_path / "dataset_coco.json", karpathy_payload()), tmp_path


# --- COCO ---------------------------------------------------------------------------------


def test_coco_groups_captions_by_image_in_annotation_order(coco):
    path, images = coco
    records = load_coco(path, images, split="train")
    assert records == [
        CaptionRecord("1", str(images / "a.jpg"), ["A dog runs.", "Dog!"], "train"),
        CaptionRecord("2", str(images / "b.jpg"), ["A cat."], "train"),
    ]
    assert {r.split for r in load_coco(path, images)} == {"unsplit"}


def test_coco_duplicate_image_id_keeps_first(tmp_path, caplog):
    payload = coco_payload(images=((1, "a.jpg"), (1, "b.jpg")), annotations=((1, "x"),))
    path = write_json(tmp_path / "c.json", payload)
    with caplog.at_level(logging.WARNING):
        records = load_coco(path, touch_images(tmp_path / "img", "a.jpg", "b.jpg"))
    assert [(r.image_id, r.image_path.endswith("a.jpg")) for r in records] == [("1", True)]
    assert "skipped 1 image(s) whose id repeats an earlier image (kept the first)" in caplog.text


def test_coco_orphan_annotations_and_captionless_images_are_skipped(tmp_path, caplog):
    payload = coco_payload(images=((1, "a.jpg"), (2, "b.jpg")), annotations=((1, "x"), (7, "y"), (8, "z")))
    path = write_json(tmp_path / "c.json", payload)
    with caplog.at_level(logging.WARNING):
        records = load_coco(path, touch_images(tmp_path / "img", "a.jpg", "b.jpg"))
    assert [r.image_id for r in records] == ["1"]
    assert "skipped 2 annotation(s) whose image_id is not in 'images', e.g. 7, 8" in caplog.text
    assert "skipped 1 image(s) with no captions, e.g. 2" in caplog.text


def test_empty_captions_dropped_and_unicode_kept(tmp_path, caplog):
    long_caption = " ".join(["word"] * 1000)
    annotations = ((1, "  "), (1, ""), (1, "un café 🐶 ☕"), (1, long_caption), (2, "\t\n"))
    path = write_json(tmp_path / "c.json", coco_payload(annotations=annotations))
    with caplog.at_level(logging.WARNING):
        records = load_coco(path, touch_images(tmp_path / "img", "a.jpg", "b.jpg"))
    assert [r.captions for r in records] == [["un café 🐶 ☕", long_caption]]
    assert "dropped 3 empty or whitespace-only caption(s)" in caplog.text
    assert "skipped 1 image(s) with no captions, e.g. 2" in caplog.text


def test_missing_image_files_are_skipped_and_counted(tmp_path, caplog):
    path = write_json(tmp_path / "c.json", coco_payload())
    images = touch_images(tmp_path / "img", "a.jpg")
    with caplog.at_level(logging.WARNING):
        records = load_coco(path, images)
    assert [r.image_id for r in records] == ["1"]
    assert "skipped 1 image(s) whose file is missing" in caplog.text
    assert len(load_coco(path, images, check_files=False)) == 2


def test_all_image_files_missing_is_an_error(tmp_path):
    path = write_json(tmp_path / "c.json", coco_payload())
    with pytest.raises(CaptioningError, match="none of the 2 image files exist .*check the image folder"):
        load_coco(path, tmp_path / "nowhere")


# --- Karpathy -------------------------------------------------------------------------------


def test_karpathy_paths_ids_and_restval_to_train(karpathy):
    path, root = karpathy
    records = load_karpathy(path, root)
    assert [(r.image_id, r.split) for r in records] == [
        ("10", "train"),
        ("11", "val"),
        ("12", "train"),
        ("13", "test"),
    ]
    assert records[0].image_path == str(root / "train2014" / "t.jpg")
    assert records[1].captions == ["a val image", "second"]


@pytest.mark.parametrize(("restval", "expected"), [("restval", "restval"), ("val", "val"), ("drop", None)])
def test_karpathy_restval_choices(karpathy, restval, expected):
    records = load_karpathy(*karpathy, restval=restval)
    splits = {r.image_id: r.split for r in records}
    assert splits.get("12") == expected
    assert len(records) == (3 if expected is None else 4)


def test_karpathy_flickr_style_without_filepath_or_cocoid(tmp_path):
    payload = {
        "images": [
            {"filename": "f1.jpg", "imgid": 0, "split": "train", "sentences": [{"tokens": ["a", "dog"]}]},
            {"filename": "f2.jpg", "split": "test", "sentences": [{"raw": "A cat.", "tokens": ["a", "cat"]}]},
        ]
    }
    path = write_json(tmp_path / "dataset_flickr8k.json", payload)
    records = load_karpathy(path, touch_images(tmp_path / "imgs", "f1.jpg", "f2.jpg"))
    assert [(r.image_id, r.image_path, r.captions) for r in records] == [
        ("0", str(tmp_path / "imgs" / "f1.jpg"), ["a dog"]),
        ("f2.jpg", str(tmp_path / "imgs" / "f2.jpg"), ["A cat."]),
    ]


def test_karpathy_rejects_unknown_restval(karpathy):
    with pytest.raises(CaptioningError, match="restval: 'bogus' is not one of train, restval, val, drop"):
        load_karpathy(*karpathy, restval="bogus")


# --- Flickr8k -------------------------------------------------------------------------------


def test_flickr8k_token_file_with_split_files(tmp_path, caplog):
    tokens = tmp_path / "Flickr8k.token.txt"
    tokens.write_text(
        "a.jpg#0\tA dog .\na.jpg#1\tA brown dog\n\nb.jpg#0\tA cat\nc.jpg#0\tA bird\n", encoding="utf-8"
    )
    (tmp_path / "train.txt").write_text("a.jpg\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("b.jpg\n\n", encoding="utf-8")
    images = touch_images(tmp_path / "Flicker8k_Dataset", "a.jpg", "b.jpg", "c.jpg")
    split_files = {"train": tmp_path / "train.txt", "test": tmp_path / "test.txt"}
    with caplog.at_level(logging.WARNING):
        records = load_flickr8k(tokens, images, split_files=split_files)
    assert [(r.image_id, r.captions, r.split) for r in records] == [
        ("a.jpg", ["A dog .", "A brown dog"], "train"),
        ("b.jpg", ["A cat"], "test"),
        ("c.jpg", ["A bird"], "unsplit"),
    ]
    assert "1 image(s) are in none of the split files; their split is 'unsplit'" in caplog.text


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_flickr8k_kaggle_csv_with_commas(tmp_path, newline):
    csv_file = tmp_path / "captions.txt"
    lines = [
        "image,caption",
        'a.jpg,"A dog, wet, runs ."',
        "a.jpg,A girl , smiling",
        'b.jpg,"He said ""hi"""',
        "",
    ]
    csv_file.write_bytes(newline.join(lines).encode("utf-8"))
    records = load_flickr8k(csv_file, touch_images(tmp_path / "Images", "a.jpg", "b.jpg"))
    assert [(r.image_id, r.captions, r.split) for r in records] == [
        ("a.jpg", ["A dog, wet, runs .", "A girl , smiling"], "unsplit"),
        ("b.jpg", ['He said "hi"'], "unsplit"),
    ]


def test_flickr8k_image_in_two_split_files_is_an_error(tmp_path):
    tokens = tmp_path / "t.txt"
    tokens.write_text("a.jpg#0\tA dog\n", encoding="utf-8")
    (tmp_path / "s1.txt").write_text("a.jpg\n", encoding="utf-8")
    (tmp_path / "s2.txt").write_text("a.jpg\n", encoding="utf-8")
    with pytest.raises(CaptioningError, match="s2.txt: image a.jpg is also in the 'train' split file"):
        load_flickr8k(
            tokens, tmp_path, split_files={"train": tmp_path / "s1.txt", "test": tmp_path / "s2.txt"}
        )


def test_flickr8k_malformed_line_names_file_and_line(tmp_path):
    tokens = tmp_path / "t.txt"
    tokens.write_text("a.jpg#0\tA dog\nthis line has no tab\n", encoding="utf-8")
    with pytest.raises(CaptioningError, match=r"t\.txt:2: expected '<image file>#<n><TAB><caption>'"):
        load_flickr8k(tokens, tmp_path)


# --- dispatcher ------------------------------------------------------------------------------


def test_load_dataset_dispatches_with_own_or_generic_argument_names(coco, karpathy):
    path, images = coco
    assert load_dataset("coco", captions_json=path, image_dir=images) == load_coco(path, images)
    assert load_dataset("coco", captions=path, images=images, split="val")[0].split == "val"
    assert load_dataset("karpathy", captions=karpathy[0], images=karpathy[1]) == load_karpathy(*karpathy)


def test_load_dataset_unknown_format_lists_valid_names():
    with pytest.raises(
        CaptioningError,
        match="unknown dataset format 'cocoa'; valid formats: coco, flickr8k, karpathy, synthetic",
    ):
        load_dataset("cocoa", root="x")


def test_load_dataset_wrong_arguments(coco):
    takes = "it takes captions_json, image_dir, split, check_files"
    with pytest.raises(
        CaptioningError, match=f"format 'coco': missing a required argument: 'captions_json'; {takes}"
    ):
        load_dataset("coco", root=coco[1])
    with pytest.raises(
        CaptioningError, match=f"format 'coco': got an unexpected keyword argument 'root'; {takes}"
    ):
        load_dataset("coco", captions=coco[0], images=coco[1], root=coco[1])


# --- robustness: messages name the file and the problem ------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.json"
    for load in (load_coco, load_karpathy, load_flickr8k):
        with pytest.raises(CaptioningError, match=f"^{re.escape(str(missing))}: file not found$"):
            load(missing, tmp_path)


def test_invalid_json_gives_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [],\n  "annotations": [,]}', encoding="utf-8")
    for load in (load_coco, load_karpathy):
        with pytest.raises(
            CaptioningError, match=rf"^{re.escape(str(path))}: not valid JSON \(line 2 column 19\)"
        ):
            load(path, tmp_path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"images": []}, "missing required key 'annotations' in the top-level object"),
        ({"images": [{"id": 1}], "annotations": []}, r"missing required key 'file_name' in images\[0\]"),
        (
            {"images": [], "annotations": [{"image_id": 1, "caption": 5}]},
            r"'caption' in annotations\[0\] must be str, got int",
        ),
        ([1, 2], "the top-level object must be a JSON object, got list"),
    ],
)
def test_coco_missing_or_wrong_keys_name_file_and_key(tmp_path, payload, message):
    path = write_json(tmp_path / "c.json", payload)
    with pytest.raises(CaptioningError, match=f"^{re.escape(str(path))}: .*{message}"):
        load_coco(path, tmp_path)


def test_karpathy_missing_key_names_file_and_key(tmp_path):
    payload = {"images": [{"filename": "a.jpg", "sentences": [{"raw": "x"}]}]}
    path = write_json(tmp_path / "k.json", payload)
    with pytest.raises(
        CaptioningError, match=rf"^{re.escape(str(path))}: missing required key 'split' in images\[0\]"
    ):
        load_karpathy(path, tmp_path)


def test_wrong_format_says_what_the_file_looks_like(tmp_path, karpathy):
    karpathy_file, _ = karpathy
    coco_file = write_json(tmp_path / "captions.json", coco_payload())
    instances = write_json(
        tmp_path / "instances.json", {"images": [], "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]}
    )
    with pytest.raises(
        CaptioningError,
        match="looks like a Karpathy split file .*format 'karpathy', not a COCO captions file",
    ):
        load_coco(karpathy_file, tmp_path)
    with pytest.raises(
        CaptioningError, match="looks like a COCO captions file .*format 'coco', not a Karpathy split file"
    ):
        load_karpathy(coco_file, tmp_path)
    with pytest.raises(CaptioningError, match="looks like a COCO instances/keypoints file"):
        load_coco(instances, tmp_path)
    with pytest.raises(
        CaptioningError, match="looks like a COCO captions file .*expected a Flickr8k captions text file"
    ):
        load_flickr8k(coco_file, tmp_path)


def test_no_usable_images_is_an_error(tmp_path):
    path = write_json(tmp_path / "c.json", coco_payload(annotations=()))
    with pytest.raises(CaptioningError, match=f"^{re.escape(str(path))}: no images with captions found"):
        load_coco(path, tmp_path, check_files=False)


def test_data_package_imports_no_tensorflow_or_pil():
    code = (
        "import sys, keras_captioning.data; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
