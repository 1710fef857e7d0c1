"""Download and unpack COCO 2014 captions, images and the Karpathy split (standard library only).

``python -m keras_captioning coco-data --dest DIR [--base-url URL] [--parts ...]`` calls
:func:`download_coco`. The parts, their public locations and sizes:

============  ===========================================================================  ===============
part          URL                                                                          size
============  ===========================================================================  ===============
annotations   http://images.cocodataset.org/annotations/annotations_trainval2014.zip       ~241 MiB
train2014     http://images.cocodataset.org/zips/train2014.zip                             ~13 GB (12.6 GiB)
val2014       http://images.cocodataset.org/zips/val2014.zip                               ~6 GB (6.2 GiB)
karpathy      https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip   ~36 MiB
============  ===========================================================================  ===============

Layout written under ``DIR``::

    downloads/<archive>.zip       finished archives (``<archive>.zip.part`` while downloading)
    downloads/SHA256SUMS          sha256 of every finished, verified archive (``sha256sum`` format)
    annotations/captions_train2014.json, captions_val2014.json, ...   (annotations)
    train2014/COCO_train2014_*.jpg                                     (train2014)
    val2014/COCO_val2014_*.jpg                                         (val2014)
    dataset_coco.json, dataset_flickr8k.json, dataset_flickr30k.json   (karpathy)
    .extracted-<archive>.zip      marker: that archive is fully extracted

Every step can be rerun: a ``.part`` file is resumed with an HTTP ``Range`` request, an archive
whose sha256 matches ``SHA256SUMS`` is not downloaded again, an archive with a marker is not
extracted again. An archive put into ``downloads/`` by hand is checked and used as is.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from keras_captioning.data.archives import (  # noqa: F401  (public names of this module)
    SUMS_FILE,
    _marker,
    _read_sums,
    _record_sum,
    extract_archive,
    verify_archive,
)
from keras_captioning.data.transfer import USER_AGENT, _url_name, download_file  # noqa: F401
from keras_captioning.errors import CaptioningError
from keras_captioning.utils import Progress as _Progress  # noqa: F401  (kept for old imports)
from keras_captioning.utils import human_bytes as _human
from keras_captioning.utils import sha256_file  # noqa: F401

logger = logging.getLogger(__name__)

MIB = 2**20
CHUNK_BYTES = MIB
DOWNLOADS_DIR = "downloads"


class _Part(NamedTuple):
    url: str
    approx_bytes: int  # shown before starting and used for the free-space warning


PARTS: dict[str, _Part] = {
    "annotations": _Part(
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip", 252_872_794
    ),
    "train2014": _Part("http://images.cocodataset.org/zips/train2014.zip", 13_510_573_713),
    "val2014": _Part("http://images.cocodataset.org/zips/val2014.zip", 6_645_013_297),
    "karpathy": _Part("https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip", 36 * MIB),
}

# Known archive sizes / sha256 by file name; None = unknown (not checked). The three COCO sizes are
# the ones images.cocodataset.org has served since 2014; the Karpathy file has no published size.
EXPECTED: dict[str, dict[str, int | str | None]] = {
    "annotations_trainval2014.zip": {"size": 252_872_794, "sha256": None},
    "train2014.zip": {"size": 13_510_573_713, "sha256": None},
    "val2014.zip": {"size": 6_645_013_297, "sha256": None},
}


def download_coco(
    dest: str | os.PathLike,
    base_url: str | None = None,
    parts: Iterable[str] | None = None,
    progress: bool = True,
    timeout: float = 30,
    expected: Mapping[str, Mapping] | None = None,
) -> dict:
    """Download, verify and extract the COCO 2014 caption data into ``dest``.

    Approximate sizes: annotations ~241 MB, train2014 ~13 GB, val2014 ~6 GB, karpathy ~36 MB
    (the extracted files take about as much again). The total is logged before starting.

    Args:
        dest: target folder (created).
        base_url: mirror serving the same file names: each archive is fetched as
            ``<base_url>/<file name>`` instead of from its public location.
        parts: subset of ``annotations``, ``train2014``, ``val2014``, ``karpathy``
            (None or empty = all four), processed in that order.
        progress: show percentage, MiB/s and ETA on stderr.
        timeout: seconds to wait for a connection or for the next bytes.
        expected: ``{file name: {"size": int | None, "sha256": str | None}}`` checked on each
            finished archive; None uses :data:`EXPECTED`, ``{}`` checks nothing.

    Returns:
        ``{"dest", "parts": [names], "archives": {part: zip path}, "sha256": {part: hex or None},
        "paths": {"captions_train", "captions_val", "train_images", "val_images", "karpathy"}}``
        (``paths`` are where the configs expect the files; sha256 is None for a part skipped
        through its extraction marker whose archive is no longer recorded).

    Raises:
        CaptioningError: unknown part, host unreachable, HTTP error, interrupted transfer (the
            ``.part`` file is kept: rerun to resume), corrupt archive (deleted: rerun), size or
            sha256 different from ``expected``, or an archive member that would land outside ``dest``.
    """
    dest = os.fspath(dest)
    names = _check_parts(parts)
    expected = EXPECTED if expected is None else expected
    downloads = os.path.join(dest, DOWNLOADS_DIR)
    os.makedirs(downloads, exist_ok=True)

    total = sum(PARTS[n].approx_bytes for n in names)
    logger.info(
        "coco-data: %s into %s, about %s in total: %s",
        ", ".join(names),
        dest,
        _human(total),
        ", ".join(f"{n} {_human(PARTS[n].approx_bytes)}" for n in names),
    )
    _warn_if_low_space(dest, [n for n in names if not os.path.exists(_marker(dest, _url_name(PARTS[n].url)))])

    archives, digests = {}, {}
    for name in names:
        url = part_url(name, base_url)
        file_name = _url_name(url)
        archive = os.path.join(downloads, file_name)
        archives[name] = archive
        marker = _marker(dest, file_name)
        if os.path.exists(marker):
            logger.info(
                "%s: already downloaded, already extracted into %s (delete %s to extract again)",
                file_name,
                dest,
                marker,
            )
            digests[name] = _read_sums(downloads).get(file_name)
            continue
        digests[name] = _obtain_archive(url, archive, expected.get(file_name) or {}, timeout, progress)
        extract_archive(archive, dest, progress=progress)

    paths = expected_paths(dest)
    logger.info(
        "coco-data: done. COCO configs: data.captions=%s data.images=%s",
        paths["captions_train"],
        paths["train_images"],
    )
    logger.info(
        "coco-data: Karpathy split: data.format=karpathy data.captions=%s data.images=%s",
        paths["karpathy"],
        dest,
    )
    return {"dest": dest, "parts": names, "archives": archives, "sha256": digests, "paths": paths}


def part_url(part: str, base_url: str | None = None) -> str:
    """The URL of a part's archive: its public location, or ``<base_url>/<file name>``."""
    url = PARTS[part].url
    if base_url:
        return f"{base_url.rstrip('/')}/{_url_name(url)}"
    return url


def expected_paths(dest: str | os.PathLike) -> dict[str, str]:
    """Where the configs expect the extracted files under ``dest``."""
    dest = os.fspath(dest)
    return {
        "captions_train": os.path.join(dest, "annotations", "captions_train2014.json"),
        "captions_val": os.path.join(dest, "annotations", "captions_val2014.json"),
        "train_images": os.path.join(dest, "train2014"),
        "val_images": os.path.join(dest, "val2014"),
        "karpathy": os.path.join(dest, "dataset_coco.json"),
    }


def _check_parts(parts: Iterable[str] | None) -> list[str]:
    wanted = list(parts or [])
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        raise CaptioningError(
            f"--parts: unknown part(s) {', '.join(map(repr, unknown))}; choose from {' '.join(PARTS)}"
        )
    return [p for p in PARTS if not wanted or p in wanted]


def _obtain_archive(url: str, archive: str, expected: Mapping, timeout: float, progress: bool) -> str:
    """Make sure a verified ``archive`` exists (reuse, check a hand-placed one, or download); its sha256."""
    downloads = os.path.dirname(archive)
    file_name = os.path.basename(archive)
    if os.path.exists(archive):
        recorded = _read_sums(downloads).get(file_name)
        digest = sha256_file(archive)
        if recorded == digest:
            logger.info("%s: already downloaded (sha256 matches %s)", file_name, SUMS_FILE)
            return digest
        if recorded:
            logger.warning(
                "%s: sha256 differs from the one in %s; checking the archive again", archive, SUMS_FILE
            )
        else:
            logger.info("%s: found an archive not downloaded by this tool; checking it", archive)
        digest = verify_archive(archive, expected, digest=digest)
    else:
        download_file(url, downloads, timeout=timeout, progress=progress, expected_size=expected.get("size"))
        digest = verify_archive(archive, expected)
    _record_sum(downloads, file_name, digest)
    return digest



def _warn_if_low_space(dest: str, todo: list[str]) -> None:
    """Warn (not fail) when ``dest`` has less room than the archives plus their extracted files."""
    need = 2 * sum(PARTS[n].approx_bytes for n in todo)
    try:
        free = shutil.disk_usage(dest).free
    except OSError:
        return
    if need and free < need:
        logger.warning(
            "%s: only %s free; %s need about %s (archives + extracted files)",
            dest,
            _human(free),
            ", ".join(todo),
            _human(need),
        )

