"""Load Flickr8k captions: the original ``Flickr8k.token.txt`` or the Kaggle ``captions.txt`` CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re

from keras_captioning.data.records import (
    JSON_FORMATS,
    UNSPLIT,
    CaptionRecord,
    detect_json_format,
    finalize_records,
    read_text,
)
from keras_captioning.errors import CaptioningError

logger = logging.getLogger(__name__)

CSV_HEADER = ["image", "caption"]
# "1000268201_693b08cb0e.jpg#0<TAB>A child in a pink dress ..."
_TOKEN_LINE = re.compile(r"^(?P<file>[^#\t]+)#(?P<index>\d+)\s(?P<caption>.*)$")


def load_flickr8k(
    captions_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    split_files: dict[str, str | os.PathLike] | None = None,
    check_files: bool = True,
) -> list[CaptionRecord]:
    """Read Flickr8k captions into one record per image.

    Two layouts are recognised from the first line: the original token file
    (``<file>#<n><TAB><caption>`` per line) and the Kaggle CSV (header ``image,caption``;
    quoted fields may contain commas, and an unquoted caption containing commas is rejoined).

    Args:
        captions_path: ``Flickr8k.token.txt`` or ``captions.txt``.
        image_dir: folder holding the images (``Flicker8k_Dataset/`` or ``Images/``).
        split_files: optional ``{split name: file}`` with one image file name per line, e.g.
            ``{"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
            "test": "Flickr_8k.testImages.txt"}``. Images in none of them get split
            ``"unsplit"`` (their number is logged); without split files every image does.
        check_files: skip (and log) images whose file is missing.

    Returns:
        list of CaptionRecord in order of first appearance; ``image_id`` is the file name.

    Raises:
        CaptioningError: file missing, a JSON file, a malformed line, or an image listed in
            two split files.
    """
    text = read_text(captions_path)
    first_line = text.lstrip().split("\n", 1)[0]
    if first_line.startswith(("{", "[")):
        raise CaptioningError(
            f"{captions_path}: {_describe_json(text)}; expected a Flickr8k captions text file"
        )
    parse = (
        _parse_csv if [c.strip().lower() for c in first_line.split(",")] == CSV_HEADER else _parse_token_file
    )
    captions_by_file: dict[str, list[str]] = {}
    for file_name, caption in parse(text, captions_path):
        captions_by_file.setdefault(file_name, []).append(caption)

    split_of = _read_split_files(split_files or {})
    records = [
        CaptionRecord(name, os.path.join(image_dir, name), captions, split_of.get(name, UNSPLIT))
        for name, captions in captions_by_file.items()
    ]
    unsplit = sum(record.split == UNSPLIT for record in records)
    if split_files and unsplit:
        logger.warning(
            "%s: %d image(s) are in none of the split files; their split is '%s'",
            captions_path,
            unsplit,
            UNSPLIT,
        )
    return finalize_records(records, captions_path, check_files)


def _parse_token_file(text: str, path: str | os.PathLike):
    """Yield (file name, caption) from ``<file>#<n><TAB><caption>`` lines."""
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _TOKEN_LINE.match(line)
        if match is None:
            raise CaptioningError(
                f"{path}:{line_number}: expected '<image file>#<n><TAB><caption>' or a CSV with "
                f"header 'image,caption', got {line[:60]!r}"
            )
        yield match["file"].strip(), match["caption"]


def _parse_csv(text: str, path: str | os.PathLike):
    """Yield (file name, caption) from an ``image,caption`` CSV (header already recognised)."""
    rows = csv.reader(io.StringIO(text.lstrip(), newline=""))
    next(rows)  # the header
    for row in rows:
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise CaptioningError(f"{path}:{rows.line_num}: expected 'image,caption', got {row!r}")
        # An unquoted caption with commas arrives split into several fields: rejoin them.
        yield row[0].strip(), ",".join(row[1:])


def _read_split_files(split_files: dict[str, str | os.PathLike]) -> dict[str, str]:
    """Map image file name -> split name from one-name-per-line split files."""
    split_of: dict[str, str] = {}
    for split, path in split_files.items():
        for name in filter(None, (line.strip() for line in read_text(path).splitlines())):
            previous = split_of.setdefault(name, split)
            if previous != split:
                raise CaptioningError(f"{path}: image {name} is also in the '{previous}' split file")
    return split_of


def _describe_json(text: str) -> str:
    """Say which known JSON format ``text`` looks like (or that it is JSON at all)."""
    try:
        found = detect_json_format(json.loads(text))
    except json.JSONDecodeError:
        found = None
    return f"looks like {JSON_FORMATS[found]}" if found else "looks like a JSON file"
