"""The one record type every dataset loader returns, and the checks the loaders share.

Each loader (``coco``, ``karpathy``, ``flickr8k``) parses its own file format into
unfiltered ``CaptionRecord`` candidates and hands them to ``finalize_records``, which
applies the same cleaning rules everywhere: duplicate image ids keep the first entry,
empty captions are dropped, images left without captions or without an image file are
skipped. Every skip is counted in one ``logging`` warning per kind, so a 120 000-image
file does not produce 120 000 log lines; inside ``collect_skips()`` each skipped record is
also listed (the features step puts them in its manifest's ``skipped``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_captioning.errors import CaptioningError

logger = logging.getLogger(__name__)

UNSPLIT = "unsplit"  # split name of images whose dataset assigns none

_collectors: list[list[dict]] = []  # the lists of the active collect_skips() blocks


@contextlib.contextmanager
def collect_skips():
    """Yields a list that receives ``{image_id, path, split, reason}`` for every record the
    loaders skip while the block runs (split is None: skips happen before splitting)."""
    items: list[dict] = []
    _collectors.append(items)
    try:
        yield items
    finally:
        _collectors.remove(items)


def note_skipped(source: str | os.PathLike, image_id: str, path: str | None, reason: str) -> None:
    """Lists one skipped record in every active :func:`collect_skips` block."""
    for items in _collectors:
        items.append({"image_id": str(image_id), "path": path, "split": None,
                      "reason": f"{reason} ({os.fspath(source)})"})

# What each known JSON layout looks like, used to say "this is a Karpathy file" rather
# than "missing key 'annotations'" when a file is given to the wrong loader.
JSON_FORMATS = {
    "coco": "a COCO captions file (images + annotations[].caption); load it with format 'coco'",
    "karpathy": "a Karpathy split file (images[].sentences); load it with format 'karpathy'",
    "coco-instances": "a COCO instances/keypoints file (annotations without captions); "
    "use the captions_*.json file of the same release",
    "coco-results": "a COCO results (predictions) file, a list of {image_id, caption}",
    "vocabulary": "a keras-captioning vocabulary file",
}


@dataclass
class CaptionRecord:
    """One image and all its reference captions.

    Attributes:
        image_id: dataset id as a string (COCO ``id``, Karpathy ``cocoid``/``imgid``,
            Flickr8k file name).
        image_path: path of the image file (image folder joined with the file name).
        captions: raw caption texts in file order (stripped, never normalized).
        split: ``"train"``, ``"val"``, ``"test"``, ``"restval"``, ... as the dataset gives it,
            or ``"unsplit"`` when it gives none.
    """

    image_id: str
    image_path: str
    captions: list[str] = field(default_factory=list)
    split: str = UNSPLIT


def require_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path, or raise ``CaptioningError("<path>: file not found")``."""
    path = Path(path)
    if path.is_dir():
        raise CaptioningError(f"{path}: is a directory; expected a file")
    if not path.is_file():
        raise CaptioningError(f"{path}: file not found")
    return path


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file (a leading byte-order mark is ignored) with user-facing errors."""
    path = require_file(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CaptioningError(
            f"{path}: not valid UTF-8 text (byte {err.start}); re-save it as UTF-8"
        ) from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CaptioningError(
            f"{path}: not valid JSON (line {err.lineno} column {err.colno}): {err.msg}"
        ) from None


def detect_json_format(data: Any) -> str | None:
    """Name the known layout (a key of ``JSON_FORMATS``) parsed JSON ``data`` has, or None."""
    if isinstance(data, list):
        first = data[0] if data else None
        if isinstance(first, dict) and {"image_id", "caption"} <= first.keys():
            return "coco-results"
        return None
    if not isinstance(data, dict):
        return None
    if "id_to_word" in data:
        return "vocabulary"
    images, annotations = data.get("images"), data.get("annotations")
    if _first_item(images) is not None and "sentences" in _first_item(images):
        return "karpathy"
    first_annotation = _first_item(annotations)
    if first_annotation is not None:
        return "coco" if "caption" in first_annotation else "coco-instances"
    return None


def check_json_format(data: Any, path: str | os.PathLike, expected: str) -> None:
    """Raise a CaptioningError saying which format ``data`` looks like when it is not ``expected``."""
    found = detect_json_format(data)
    if found is not None and found != expected:
        raise CaptioningError(
            f"{path}: looks like {JSON_FORMATS[found]}, not {JSON_FORMATS[expected].split(';')[0]}"
        )


def get_field(
    obj: Any, key: str, path: str | os.PathLike, where: str, kind: type | tuple[type, ...] | None = None
) -> Any:
    """Return ``obj[key]``, raising a CaptioningError naming the file, location and key.

    Args:
        obj: the parsed JSON object that should hold ``key``.
        key: the required key.
        path: the file, for the message.
        where: where ``obj`` sits in the file, e.g. ``"the top-level object"`` or ``"images[3]"``.
        kind: expected type(s) of the value, or None for any.
    """
    if not isinstance(obj, dict):
        raise CaptioningError(f"{path}: {where} must be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise CaptioningError(f"{path}: missing required key '{key}' in {where}")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise CaptioningError(f"{path}: '{key}' in {where} must be {names}, got {type(value).__name__}")
    return value


def finalize_records(
    candidates: list[CaptionRecord], source: str | os.PathLike, check_files: bool = True
) -> list[CaptionRecord]:
    """Apply the shared cleaning rules to a loader's raw records, logging every kind of skip.

    Rules, in order: a repeated ``image_id`` keeps its first record; captions are stripped and
    empty or whitespace-only ones dropped; images with no caption left are skipped; with
    ``check_files`` images whose file does not exist are skipped (if none exists the image
    folder is wrong and a CaptioningError says so). An empty result is an error too.

    Args:
        candidates: records in file order; their caption lists are not modified.
        source: the captions file, for messages.
        check_files: verify each ``image_path`` exists.

    Returns:
        The kept records, in input order, with cleaned caption lists.
    """
    seen: set[str] = set()
    duplicates, no_captions, missing_files = [], [], []
    empty_captions = 0
    kept: list[CaptionRecord] = []
    for record in candidates:
        if record.image_id in seen:
            duplicates.append(record.image_id)
            note_skipped(source, record.image_id, record.image_path, "image id repeats an earlier image; kept the first")
            continue
        seen.add(record.image_id)
        captions = [caption.strip() for caption in record.captions]
        cleaned = [caption for caption in captions if caption]
        empty_captions += len(captions) - len(cleaned)
        if not cleaned:
            no_captions.append(record.image_id)
            note_skipped(source, record.image_id, record.image_path, "no captions")
            continue
        if check_files and not os.path.isfile(record.image_path):
            missing_files.append(record.image_path)
            note_skipped(source, record.image_id, record.image_path, "file not found")
            continue
        kept.append(CaptionRecord(record.image_id, record.image_path, cleaned, record.split))

    if duplicates:
        log_skipped(source, duplicates, "image(s) whose id repeats an earlier image (kept the first)")
    if empty_captions:
        logger.warning("%s: dropped %d empty or whitespace-only caption(s)", source, empty_captions)
    if no_captions:
        log_skipped(source, no_captions, "image(s) with no captions")
    if missing_files:
        if not kept:
            folder = os.path.dirname(missing_files[0]) or "."
            raise CaptioningError(
                f"{source}: none of the {len(missing_files)} image files exist (first: {missing_files[0]}); "
                f"check the image folder {folder} (or pass check_files=False)"
            )
        log_skipped(source, missing_files, "image(s) whose file is missing")
    if not kept:
        raise CaptioningError(f"{source}: no images with captions found")
    logger.info("%s: loaded %d images, %d captions", source, len(kept), sum(len(r.captions) for r in kept))
    return kept


def log_skipped(source: str | os.PathLike, items: list[str], what: str) -> None:
    """Log one warning: how many ``what`` were skipped, with the first three as examples."""
    logger.warning("%s: skipped %d %s, e.g. %s", source, len(items), what, ", ".join(items[:3]))


def _first_item(value: Any) -> dict | None:
    """The first element of a JSON list when it is an object, else None."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return None
