"""A synthetic "shapes" captioning dataset whose captions depend on where objects are.

Each image shows 1-3 coloured shapes, each in its own cell of a 3x3 grid, on a light
background with a little pixel noise. Its 5 captions name colours, shapes and sizes, the
absolute position of an object ("in the top left corner") and relations between objects
("a red circle to the left of a blue square"; the object named first is the one the
relation describes, so "X to the left of Y" always has X on the left). A model that sees
only a globally pooled feature vector knows which shapes are present but not where they
are; an attention model over a spatial grid can tell. That difference is the point of the
dataset (the package's demo).

Usage::

    python -m keras_captioning.data.synthetic --num-images 200 --out data/shapes --seed 0

writes ``OUT/images/000001.jpg ...`` (JPEG quality 90), ``OUT/captions.json`` (COCO
captions format) and ``OUT/objects.json`` (``{image_id: [{"bbox": [x, y, w, h], "words":
[colour, shape], "color", "shape", "size", "position", "cell": [row, column]}]}``). Image ``i`` depends only on
``(seed, i)``: the same seed gives byte-identical files, and a larger ``--num-images``
extends a smaller run. Files of an earlier, larger run in ``OUT/images`` are left in place
but are not listed in ``captions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from keras_captioning.data.loaders import SYNTHETIC_CAPTIONS, SYNTHETIC_IMAGES, SYNTHETIC_OBJECTS
from keras_captioning.errors import CaptioningError

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 80, 220),
    "yellow": (240, 210, 0),
    "purple": (130, 40, 170),
    "orange": (250, 130, 0),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 0.14, "large": 0.26}  # side of the bounding box as a fraction of the image side
BACKGROUND = (235, 235, 228)
NOISE = 6  # uniform pixel noise amplitude, so no two backgrounds are identical
OBJECT_COUNT_PROBS = (0.25, 0.45, 0.30)  # 1, 2, 3 objects: relations need at least two
GRID = 3
CELL_NAMES = {  # (row, column) -> position words
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "centre",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
CAPTIONS_PER_IMAGE = 5
MIN_IMAGE_SIZE = 48
JPEG_QUALITY = 90


def generate_synthetic(out: str | os.PathLike, num_images: int, seed: int = 0, image_size: int = 96) -> Path:
    """Write a synthetic shapes dataset to ``out`` (layout in the module docstring).

    Args:
        out: output folder (created if needed).
        num_images: number of images, >= 1.
        seed: non-negative seed; image ``i`` is generated from ``(seed, i)``.
        image_size: side of the square images in pixels, >= 48.

    Returns:
        path of ``out/captions.json``.
    """
    if num_images < 1:
        raise CaptioningError(f"num_images: must be at least 1, got {num_images}")
    if image_size < MIN_IMAGE_SIZE:
        raise CaptioningError(f"image_size: must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    if seed < 0:
        raise CaptioningError(f"seed: must be >= 0, got {seed}")
    out = Path(out)
    (out / SYNTHETIC_IMAGES).mkdir(parents=True, exist_ok=True)

    images, annotations, objects_by_image = [], [], {}
    for image_id in range(1, num_images + 1):
        rng = np.random.default_rng([seed, image_id])
        objects = sample_scene(rng, image_size)
        file_name = f"{image_id:06d}.jpg"
        draw_scene(objects, image_size, rng).save(
            out / SYNTHETIC_IMAGES / file_name, "JPEG", quality=JPEG_QUALITY
        )
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
        for caption in describe_scene(objects, rng):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
        objects_by_image[str(image_id)] = objects

    info = {"description": "keras-captioning synthetic shapes", "seed": seed, "image_size": image_size}
    _write_json(out / SYNTHETIC_OBJECTS, objects_by_image)
    # Written last: a captions file only exists once every image it lists does.
    _write_json(out / SYNTHETIC_CAPTIONS, {"info": info, "images": images, "annotations": annotations})
    return out / SYNTHETIC_CAPTIONS


def sample_scene(rng: np.random.Generator, image_size: int) -> list[dict]:
    """Draw 1-3 objects with distinct colours, each inside its own grid cell.

    Returns:
        objects as stored in objects.json: ``bbox`` [x, y, w, h] in pixels, ``words``
        [colour, shape], ``color``, ``shape``, ``size``, ``position`` (a ``CELL_NAMES`` value)
        and ``cell`` [row, column] of the 3x3 grid.
    """
    count = int(rng.choice(len(OBJECT_COUNT_PROBS), p=OBJECT_COUNT_PROBS)) + 1
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    colors = rng.choice(list(COLORS), size=count, replace=False)
    edges = [round(k * image_size / GRID) for k in range(GRID + 1)]
    margin = max(1, image_size // 48)  # keeps neighbouring objects visibly apart
    objects = []
    for cell, color in zip(cells, colors):
        row, column = divmod(int(cell), GRID)
        shape, size = str(rng.choice(SHAPES)), str(rng.choice(list(SIZES)))
        side = round(SIZES[size] * image_size)
        x, y = (_jitter(edges[k], edges[k + 1], side, margin, rng) for k in (column, row))
        objects.append(
            {
                "bbox": [x, y, side, side],
                "words": [str(color), shape],
                "color": str(color),
                "shape": shape,
                "size": size,
                "position": CELL_NAMES[row, column],
                "cell": [row, column],
            }
        )
    return objects


def _jitter(start: int, stop: int, side: int, margin: int, rng: np.random.Generator) -> int:
    """A random offset that keeps ``side`` pixels, plus ``margin`` each end, inside [start, stop)."""
    return start + margin + int(rng.integers(0, max(0, stop - start - side - 2 * margin) + 1))


def draw_scene(objects: list[dict], image_size: int, rng: np.random.Generator) -> Image.Image:
    """Render objects on the background and add uniform noise; returns an RGB image."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        x, y, w, h = obj["bbox"]
        x1, y1, fill = x + w - 1, y + h - 1, COLORS[obj["color"]]
        if obj["shape"] == "circle":
            draw.ellipse([x, y, x1, y1], fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle([x, y, x1, y1], fill=fill)
        elif obj["shape"] == "triangle":
            draw.polygon([(x, y1), (x1, y1), ((x + x1) / 2, y)], fill=fill)
        else:  # cross: two bars a third of the side thick
            bar = max(1, w // 3)
            draw.rectangle([x, y + (h - bar) // 2, x1, y + (h - bar) // 2 + bar - 1], fill=fill)
            draw.rectangle([x + (w - bar) // 2, y, x + (w - bar) // 2 + bar - 1, y1], fill=fill)
    noise = rng.integers(-NOISE, NOISE + 1, size=(image_size, image_size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def describe_scene(objects: list[dict], rng: np.random.Generator) -> list[str]:
    """Pick ``CAPTIONS_PER_IMAGE`` different true captions for a scene.

    Candidates: each object with its absolute position; every pair with each relation that
    holds between their cells ("left of"/"right of" when the columns differ,
    "above"/"below" when the rows differ), the described object first; and for 2-3 objects
    a listing in left-to-right order. At most 12 words each.
    """
    candidates = []
    for obj in objects:
        candidates += _position_captions(obj, others=len(objects) - 1)
    for i, first in enumerate(objects):
        for second in objects[i + 1 :]:
            candidates += _relation_captions(first, second)
    if len(objects) > 1:
        ordered = sorted(objects, key=lambda obj: obj["cell"][::-1])  # left to right, then top to bottom
        names = [_noun(obj) for obj in ordered]
        listing = " and ".join([", ".join(names[:-1]), names[-1]])
        candidates.append(f"{['two', 'three'][len(objects) - 2]} shapes: {listing}")
    candidates = list(dict.fromkeys(candidates))  # distinct, in a fixed order
    chosen = rng.choice(len(candidates), size=CAPTIONS_PER_IMAGE, replace=False)
    return [candidates[int(i)] for i in chosen]


def _noun(obj: dict, sized: bool = False) -> str:
    """'a red circle', or with ``sized`` 'a small red circle' / 'an orange square'."""
    words = ([obj["size"]] if sized else []) + [obj["color"], obj["shape"]]
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def _place(obj: dict) -> str:
    """'in the top left corner', 'on the left', 'at the top', 'in the centre'."""
    position = obj["position"]
    if " " in position:
        return f"in the {position} corner"
    if position == "centre":
        return "in the centre"
    return f"{'on' if position in ('left', 'right') else 'at'} the {position}"


def _position_captions(obj: dict, others: int) -> list[str]:
    place = _place(obj)
    captions = [f"{_noun(obj, sized=True)} {place}", f"there is {_noun(obj)} {place}"]
    if others == 0:
        captions += [
            f"{_noun(obj)} {place}",
            f"{place} there is {_noun(obj, sized=True)}",
            f"a single {obj['color']} {obj['shape']} {place}",
            f"one {obj['size']} {obj['color']} {obj['shape']} {place}",
        ]
    else:
        captions.append(f"{_noun(obj)} {place} and {['one other shape', 'two other shapes'][others - 1]}")
    return captions


def _relation_captions(a: dict, b: dict) -> list[str]:
    """Captions for every relation between the cells of ``a`` and ``b``, described object first."""
    captions = []
    for axis, before, after in ((1, "to the left of", "to the right of"), (0, "above", "below")):
        if a["cell"][axis] == b["cell"][axis]:
            continue
        low, high = (a, b) if a["cell"][axis] < b["cell"][axis] else (b, a)
        captions += [
            f"{_noun(low)} {before} {_noun(high)}",
            f"{_noun(high)} {after} {_noun(low)}",
            f"{_noun(low, sized=True)} {before} {_noun(high, sized=True)}",
            f"{_noun(high, sized=True)} {after} {_noun(low, sized=True)}",
        ]
    return captions


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_captioning.data.synthetic",
        description="Write a synthetic shapes captioning dataset (COCO-format captions).",
    )
    parser.add_argument("--num-images", type=int, required=True, help="number of images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, default=96, help="image side in pixels (default 96)")
    args = parser.parse_args(argv)
    try:
        captions_json = generate_synthetic(args.out, args.num_images, args.seed, args.image_size)
    except CaptioningError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.num_images} images to {Path(args.out) / SYNTHETIC_IMAGES} and {captions_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
