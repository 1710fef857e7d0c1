"""Load Karpathy split files (``dataset_coco.json``, ``dataset_flickr8k.json``, ``dataset_flickr30k.json``)."""

from __future__ import annotations

import logging
import os

from keras_captioning.data.records import (
    CaptionRecord,
    check_json_format,
    finalize_records,
    get_field,
    read_json,
)
from keras_captioning.errors import CaptioningError

logger = logging.getLogger(__name__)

# Where the Karpathy "restval" images (COCO val2014 images outside the 5k val/test) go.
RESTVAL_CHOICES = ("train", "restval", "val", "drop")


def load_karpathy(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    restval: str = "train",
    check_files: bool = True,
) -> list[CaptionRecord]:
    """Read a Karpathy split JSON into one record per image, with its split.

    Each entry of ``"images"`` has ``"filename"``, an optional ``"filepath"`` (COCO:
    ``train2014``/``val2014``; absent for Flickr), ``"split"`` in train/val/test/restval,
    ``"sentences": [{"raw", "tokens"}]`` and an id ``"cocoid"`` (COCO) or ``"imgid"``.

    Args:
        json_path: path of the split file.
        image_root: folder the image paths are relative to: ``image_root/filepath/filename``.
        restval: what the ``"restval"`` split becomes: ``"train"`` (the usual 113k-image
            training set), ``"restval"`` (kept apart), ``"val"``, or ``"drop"`` (removed, logged).
        check_files: skip (and log) images whose file is missing.

    Returns:
        list of CaptionRecord; ``image_id`` is ``cocoid`` if present, else ``imgid``, else the
        file name. A sentence's caption is its ``"raw"`` text, or its tokens joined by spaces.

    Raises:
        CaptioningError: bad ``restval``, file missing, invalid JSON, another known format,
            or a missing key.
    """
    if restval not in RESTVAL_CHOICES:
        raise CaptioningError(f"restval: '{restval}' is not one of {', '.join(RESTVAL_CHOICES)}")
    data = read_json(json_path)
    check_json_format(data, json_path, "karpathy")
    images = get_field(data, "images", json_path, "the top-level object", list)

    records, dropped = [], 0
    for index, image in enumerate(images):
        where = f"images[{index}]"
        file_name = get_field(image, "filename", json_path, where, str)
        split = get_field(image, "split", json_path, where, str)
        sentences = get_field(image, "sentences", json_path, where, list)
        if split == "restval":
            if restval == "drop":
                dropped += 1
                continue
            split = restval
        image_id = image.get("cocoid", image.get("imgid", file_name))
        path = os.path.join(image_root, image.get("filepath") or "", file_name)
        captions = [_sentence_text(s, json_path, f"{where}.sentences[{i}]") for i, s in enumerate(sentences)]
        records.append(CaptionRecord(str(image_id), path, captions, split))
    if dropped:
        logger.info("%s: dropped %d restval image(s) (restval='drop')", json_path, dropped)
    return finalize_records(records, json_path, check_files)


def _sentence_text(sentence: dict, json_path: str | os.PathLike, where: str) -> str:
    """The raw caption of one Karpathy sentence, falling back to its joined tokens."""
    if isinstance(sentence, dict) and "raw" not in sentence and "tokens" in sentence:
        return " ".join(str(token) for token in get_field(sentence, "tokens", json_path, where, list))
    return get_field(sentence, "raw", json_path, where, str)
