"""Load your own photos: a caption table (CSV, TSV or JSON lines) with one row per (image, caption).

A table names, in each row, an image file (relative to the image folder, or absolute), one
caption for it, and optionally the image's split::

    image,caption,split                          {"image": "a.jpg", "caption": "A dog."}
    beach/a.jpg,A dog runs on the sand.,train    {"image": "a.jpg", "caption": "It runs."}
    beach/a.jpg,"A brown dog, running.",train

An image's captions are its rows, in file order. The column names are settings
(``data.image_column``, ``data.caption_column``, ``data.split_column``); the layout comes
from the file: a first character ``{`` means JSON lines, else delimited text whose delimiter
is ``data.delimiter`` or, when that is null, a tab for ``.tsv``/``.tab`` files and a comma
otherwise. Delimited text needs a header row naming the columns.

Bad rows are skipped, never a traceback: too few fields, no image name, an empty caption, a
split column left empty or contradicting the image's earlier rows, a row repeating an earlier
(image, caption) pair, a line that is not valid UTF-8 or (JSON lines) not a JSON object. They
are counted in one warning with a few examples, and listed in the features manifest's
``skipped`` (:func:`records.collect_skips`). Missing image files are skipped by the shared
:func:`records.finalize_records`, files that are not images by the feature extraction (the
one image decoder). A table with no usable row is one :class:`CaptioningError` naming it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections import Counter

from keras_captioning.data.records import (
    UNSPLIT,
    CaptionRecord,
    finalize_records,
    log_skipped,
    note_skipped,
    require_file,
)
from keras_captioning.errors import CaptioningError

logger = logging.getLogger(__name__)

TAB_EXTENSIONS = (".tsv", ".tab")
# Bytes that are not UTF-8 are decoded as lone surrogates (``surrogateescape``), so one badly
# encoded row is found and skipped instead of refusing the whole file.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def load_table(
    table_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    image_column: str = "image",
    caption_column: str = "caption",
    split_column: str | None = "split",
    delimiter: str | None = None,
    check_files: bool = True,
) -> list[CaptionRecord]:
    """Read a caption table into one record per image.

    Args:
        table_path: the CSV / TSV / JSON-lines file.
        image_dir: folder the image names are relative to.
        image_column: column holding the image file name.
        caption_column: column holding one caption.
        split_column: column holding the image's split (``train``/``val``/``test``...); when
            the table has no such column (or this is None) every image gets ``"unsplit"``
            and the seeded by-image split of ``data.splits`` applies.
        delimiter: field separator of delimited text; None picks it from the extension.
        check_files: skip (and log) images whose file is missing.

    Returns:
        list of CaptionRecord in order of first appearance; ``image_id`` is the image name
        as the table writes it.

    Raises:
        CaptioningError: file missing, UTF-16, no header / a missing image or caption
            column, or no usable row.
    """
    text = _read_table_text(table_path)
    if not text.strip():
        raise CaptioningError(f"{table_path}: the table is empty; expected a header row and one row per caption")
    columns = {"image": image_column, "caption": caption_column, "split": split_column}
    if text.lstrip().startswith("{"):
        rows, has_split = _json_rows(text, table_path, columns)
    else:
        if delimiter is None:
            delimiter = "\t" if str(table_path).lower().endswith(TAB_EXTENSIONS) else ","
        rows, has_split = _delimited_rows(text, table_path, columns, delimiter)

    records: dict[str, CaptionRecord] = {}
    seen_pairs: set[tuple[str, str]] = set()
    skipped: list[tuple[int, str, str]] = []  # (row number, image, reason)
    for number, row in rows:
        reason = _row_problem(row, has_split)
        image = row.get("image") or ""
        if reason is None:
            record = records.get(image)
            if (image, row["caption"]) in seen_pairs:
                reason = "repeats an earlier row of the same image and caption"
            elif has_split and record is not None and record.split != row["split"]:
                reason = f"split {row['split']!r} differs from the image's earlier rows ({record.split!r})"
        if reason is not None:
            skipped.append((number, image, reason))
            note_skipped(table_path, image, os.path.join(image_dir, image) if image else None,
                         f"row {number}: {reason}")
            continue
        seen_pairs.add((image, row["caption"]))
        if image not in records:
            split = row["split"] if has_split else UNSPLIT
            records[image] = CaptionRecord(image, os.path.join(image_dir, image), [], split)
        records[image].captions.append(row["caption"])

    if skipped:
        log_skipped(table_path, [f"row {n} ({reason})" for n, _, reason in skipped], "row(s)")
    if not records:
        reasons = Counter(reason.split(" (")[0] for _, _, reason in skipped)
        summary = "; ".join(f"{count} {reason}" for reason, count in reasons.most_common(3))
        raise CaptioningError(f"{table_path}: no usable row (skipped {len(skipped)}: {summary})"
                              if skipped else f"{table_path}: no rows after the header")
    if not has_split:
        logger.info("%s: no '%s' column; the images are split by data.splits (seeded, by image)",
                    table_path, split_column)
    return finalize_records(list(records.values()), table_path, check_files)


def _read_table_text(path: str | os.PathLike) -> str:
    """The file's text; bytes that are not UTF-8 become lone surrogates (flagged per row)."""
    path = require_file(path)
    data = path.read_bytes()
    if data.startswith(_UTF16_BOMS):
        raise CaptioningError(f"{path}: is UTF-16 text; re-save the table as UTF-8")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def _row_problem(row: dict, has_split: bool) -> str | None:
    """Why a parsed row cannot be used, or None."""
    if "problem" in row:
        return row["problem"]
    if any(isinstance(value, str) and _NOT_UTF8.search(value) for value in row.values()):
        return "not valid UTF-8 (re-save the table as UTF-8)"
    if not row["image"]:
        return "no image name"
    if not row["caption"]:
        return "empty caption"
    if has_split and not row["split"]:
        return "empty split"
    return None


def _delimited_rows(text: str, path, columns: dict, delimiter: str):
    """``(rows, has_split)``: ``(row number, {image, caption, split})`` per data row of a CSV/TSV."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = None
    for header in reader:
        if "".join(header).strip():
            break
    names = [name.strip() for name in header or []]
    index = {key: _find_column(names, name) for key, name in columns.items() if name}
    for key in ("image", "caption"):
        if index.get(key) is None:
            shown = "|".join(names) if len(names) > 1 else repr(delimiter.join(names))[:80]
            raise CaptioningError(
                f"{path}: no '{columns[key]}' column in the header ({shown}); name the table's columns "
                f"with data.image_column / data.caption_column (and data.delimiter if not {delimiter!r})")
    has_split = index.get("split") is not None
    caption_last = index["caption"] == len(names) - 1
    rows = []
    for fields in reader:
        number = reader.line_num
        if not "".join(fields).strip():
            continue
        if len(fields) > len(names) and caption_last:
            # An unquoted caption containing the delimiter arrives split: rejoin it.
            fields = fields[: len(names) - 1] + [delimiter.join(fields[len(names) - 1:])]
        needed = max(i for i in index.values() if i is not None) + 1
        if len(fields) < needed:
            rows.append((number, {"problem": f"{len(fields)} field(s), the header has {len(names)}"}))
            continue
        rows.append((number, {key: fields[i].strip() if i is not None else None for key, i in index.items()}))
    return rows, has_split


def _json_rows(text: str, path, columns: dict):
    """``(rows, has_split)`` of a JSON-lines table: the split column exists if any row has it."""
    rows, has_split = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            rows.append((number, {"problem": f"not valid JSON ({err.msg})"}))
            continue
        if not isinstance(obj, dict):
            rows.append((number, {"problem": f"a JSON {type(obj).__name__}, not an object"}))
            continue
        row = {}
        for key, name in columns.items():
            value = obj.get(name) if name else None
            if value is not None and not isinstance(value, str):
                row = {"problem": f"'{name}' is a {type(value).__name__}, not text"}
                break
            row[key] = (value or "").strip() if name else None
        has_split = has_split or bool(columns["split"] and columns["split"] in obj)
        rows.append((number, row))
    if not has_split:
        for _, row in rows:
            row.pop("split", None)
    return rows, has_split


def _find_column(names: list[str], wanted: str) -> int | None:
    """Index of the header ``wanted`` (exact, else case-insensitive), or None."""
    if wanted in names:
        return names.index(wanted)
    lowered = [name.lower() for name in names]
    return lowered.index(wanted.lower()) if wanted.lower() in lowered else None
