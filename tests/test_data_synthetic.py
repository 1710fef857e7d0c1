"""The synthetic shapes dataset: determinism, and captions that are true of the drawn scene."""

import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from keras_captioning.data import load_coco, load_dataset, normalize_caption
from keras_captioning.data.synthetic import CELL_NAMES, COLORS, SHAPES, SIZES, generate_synthetic, main
from keras_captioning.errors import CaptioningError

NOUN = rf"(?:a|an) (?:(small|large) )?({'|'.join(COLORS)}) ({'|'.join(SHAPES)})"
RELATION = re.compile(rf"{NOUN} (to the left of|to the right of|above|below) {NOUN}")
PLACE = (
    r"(in the (?:top|bottom) (?:left|right) corner|on the (?:left|right)|at the (?:top|bottom)|in the centre)"
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_synthetic(root, num_images=40, seed=1, image_size=96)
    captions = json.loads((root / "captions.json").read_text())
    objects = json.loads((root / "objects.json").read_text())
    return root, captions, objects


def read_tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def find(objects, size, color, shape):
    matches = [
        o for o in objects if o["color"] == color and o["shape"] == shape and size in ("", None, o["size"])
    ]
    assert len(matches) == 1, (size, color, shape, objects)
    return matches[0]


def test_same_seed_identical_bytes_different_seed_different(tmp_path, dataset):
    generate_synthetic(tmp_path / "a", 40, seed=1)
    generate_synthetic(tmp_path / "b", 6, seed=2)
    first = read_tree(tmp_path / "a")
    assert first == read_tree(dataset[0])
    assert len([name for name in first if name.endswith(".jpg")]) == 40
    other = read_tree(tmp_path / "b")
    assert all(other[name] != first[name] for name in ("captions.json", "objects.json", "images/000001.jpg"))


def test_coco_format_and_loading(dataset):
    root, captions, _ = dataset
    assert captions["images"][0] == {"id": 1, "file_name": "000001.jpg", "width": 96, "height": 96}
    records = load_dataset("synthetic", root=root)
    assert records == load_coco(root / "captions.json", root / "images")
    assert len(records) == 40 and {r.split for r in records} == {"unsplit"}
    assert Image.open(records[0].image_path).format == "JPEG"


def test_five_distinct_short_captions_with_small_vocabulary(dataset):
    _, captions, _ = dataset
    by_image = {}
    for annotation in captions["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation["caption"])
    assert all(len(c) == 5 and len(set(c)) == 5 for c in by_image.values())
    words = [normalize_caption(c).split() for c in sum(by_image.values(), [])]
    assert max(map(len, words)) <= 15
    assert len({w for caption in words for w in caption}) < 60


def test_captions_name_only_drawn_objects_and_true_relations(dataset):
    _, captions, objects = dataset
    relations_checked = 0
    for annotation in captions["annotations"]:
        scene, text = objects[str(annotation["image_id"])], annotation["caption"]
        for size, color, shape in re.findall(NOUN, text):
            find(scene, size, color, shape)
        for size1, color1, shape1, relation, size2, color2, shape2 in RELATION.findall(text):
            (x1, y1, w1, h1), (x2, y2, w2, h2) = (
                find(scene, size1, color1, shape1)["bbox"],
                find(scene, size2, color2, shape2)["bbox"],
            )
            holds = {
                "to the left of": x1 + w1 <= x2,
                "to the right of": x2 + w2 <= x1,
                "above": y1 + h1 <= y2,
                "below": y2 + h2 <= y1,
            }[relation]
            assert holds, (text, scene)
            relations_checked += 1
    assert relations_checked > 20


def test_position_phrases_match_object_location(dataset):
    _, captions, objects = dataset
    checked = 0
    for annotation in captions["annotations"]:
        scene, text = objects[str(annotation["image_id"])], annotation["caption"]
        mentions = re.findall(rf"{NOUN} {PLACE}", text) + [
            m[1:] + m[:1] for m in re.findall(rf"{PLACE} there is {NOUN}", text)
        ]
        for size, color, shape, place in mentions:
            obj = find(scene, size, color, shape)
            x, y, w, h = obj["bbox"]
            row, column = int((y + h / 2) * 3 // 96), int((x + w / 2) * 3 // 96)
            assert re.sub(r"^(in|on|at) the | corner$", "", place) == CELL_NAMES[row, column], (text, obj)
            checked += 1
    assert checked > 20


def test_pixel_at_object_centre_has_its_colour(dataset):
    root, _, objects = dataset
    for image_id, scene in objects.items():
        pixels = np.asarray(
            Image.open(root / "images" / f"{int(image_id):06d}.jpg").convert("RGB"), dtype=int
        )
        for obj in scene:
            x, y, w, h = obj["bbox"]
            assert obj["words"] == [obj["color"], obj["shape"]] and obj["size"] in SIZES
            centre = pixels[y + h // 2, x + w // 2]
            assert np.abs(centre - COLORS[obj["color"]]).max() < 40, (image_id, obj, centre)


def test_objects_do_not_overlap(dataset):
    _, _, objects = dataset
    for scene in objects.values():
        assert 1 <= len(scene) <= 3 and len({o["color"] for o in scene}) == len(scene)
        for i, (x1, y1, w1, h1) in enumerate(o["bbox"] for o in scene):
            for x2, y2, w2, h2 in (o["bbox"] for o in scene[i + 1 :]):
                assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1


def test_cli_and_speed(tmp_path, capsys):
    start = time.perf_counter()
    assert (
        main(["--num-images", "200", "--out", str(tmp_path / "s"), "--seed", "0", "--image-size", "64"]) == 0
    )
    assert time.perf_counter() - start < 20
    assert "wrote 200 images" in capsys.readouterr().out
    assert main(["--num-images", "0", "--out", str(tmp_path / "t")]) == 2
    assert "error: num_images: must be at least 1" in capsys.readouterr().err
    with pytest.raises(CaptioningError, match="image_size: must be at least 48"):
        generate_synthetic(tmp_path / "u", 1, image_size=32)
