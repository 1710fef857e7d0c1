"""Load MS-COCO caption annotations (``captions_train2014.json`` and files of the same format)."""

from __future__ import annotations

import os

from keras_captioning.data.records import (
    UNSPLIT,
    CaptionRecord,
    check_json_format,
    finalize_records,
    get_field,
    log_skipped,
    note_skipped,
    read_json,
)


def load_coco(
    captions_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    split: str | None = None,
    check_files: bool = True,
) -> list[CaptionRecord]:
    """Read a COCO captions JSON into one record per image.

    The file holds ``"images": [{"id", "file_name", ...}]`` and
    ``"annotations": [{"image_id", "caption", "id"}]``. Captions are grouped by image in
    annotation order; records come in the order of ``"images"``. Annotations whose image id
    is not among the images are skipped (logged), as are the cases ``finalize_records``
    handles (repeated image ids, empty captions, images without captions or files).

    Args:
        captions_json: path of the captions file.
        image_dir: folder holding the images named by ``file_name``.
        split: split name given to every record (COCO files hold one split each);
            None gives ``"unsplit"``.
        check_files: skip (and log) images whose file is missing.

    Returns:
        list of CaptionRecord with ``image_id = str(images[i]["id"])``.

    Raises:
        CaptioningError: file missing, invalid JSON, another known format, or a missing key.
    """
    data = read_json(captions_json)
    check_json_format(data, captions_json, "coco")
    top = "the top-level object"
    images = get_field(data, "images", captions_json, top, list)
    annotations = get_field(data, "annotations", captions_json, top, list)

    records, by_id = [], {}
    for index, image in enumerate(images):
        where = f"images[{index}]"
        image_id = str(get_field(image, "id", captions_json, where, (int, str)))
        file_name = get_field(image, "file_name", captions_json, where, str)
        record = CaptionRecord(image_id, os.path.join(image_dir, file_name), [], split or UNSPLIT)
        records.append(record)
        by_id.setdefault(image_id, record)  # a repeated id keeps the first; finalize_records logs it

    orphans = []
    for index, annotation in enumerate(annotations):
        where = f"annotations[{index}]"
        image_id = str(get_field(annotation, "image_id", captions_json, where, (int, str)))
        caption = get_field(annotation, "caption", captions_json, where, str)
        if image_id in by_id:
            by_id[image_id].captions.append(caption)
        else:
            orphans.append(image_id)
            note_skipped(captions_json, image_id, None, f"{where}: its image_id is not in 'images'")
    if orphans:
        log_skipped(captions_json, orphans, "annotation(s) whose image_id is not in 'images'")
    return finalize_records(records, captions_json, check_files)
