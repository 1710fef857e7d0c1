"""Archive verification (size, sha256, zip CRCs, ``SHA256SUMS``) and safe extraction (standard library only)."""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping

from keras_captioning.data.transfer import _reason
from keras_captioning.errors import CaptioningError
from keras_captioning.utils import Progress, sha256_file

logger = logging.getLogger("keras_captioning.data.download")

SUMS_FILE = "SHA256SUMS"

# --------------------------------------------------------------------------------------------
# Verification


def verify_archive(
    path: str | os.PathLike, expected: Mapping | None = None, digest: str | None = None
) -> str:
    """Check a zip archive: size and sha256 against ``expected`` (when known), then every CRC.

    A failing archive is deleted (and dropped from ``SHA256SUMS``) so that a rerun downloads it again.

    Args:
        path: the archive.
        expected: ``{"size": int | None, "sha256": str | None}`` or None.
        digest: its sha256 when already computed.

    Returns:
        the archive's sha256 (hex).

    Raises:
        CaptioningError: ``<path>: corrupt archive (<what>); deleted it, rerun to download it again``.
    """
    path = os.fspath(path)
    expected = expected or {}
    logger.info("%s: verifying (size, sha256, zip CRCs)", path)
    size = os.path.getsize(path)
    problem = None
    if expected.get("size") and size != expected["size"]:
        problem = f"{size} bytes instead of {expected['size']}"
    if problem is None:
        digest = digest or sha256_file(path)
        if expected.get("sha256") and digest != str(expected["sha256"]).lower():
            problem = f"sha256 {digest[:12]}... instead of {str(expected['sha256'])[:12]}..."
    if problem is None:
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                problem = f"member {bad!r} fails its CRC check"
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            problem = f"not a readable zip: {_reason(exc)}"
    if problem is not None:
        os.remove(path)
        _drop_sum(os.path.dirname(path), os.path.basename(path))
        raise CaptioningError(f"{path}: corrupt archive ({problem}); deleted it, rerun to download it again")
    return digest


def _read_sums(downloads_dir: str) -> dict[str, str]:
    """``SHA256SUMS`` as ``{file name: hex}`` (missing file = empty)."""
    sums = {}
    try:
        with open(os.path.join(downloads_dir, SUMS_FILE), encoding="utf-8") as f:
            for line in f:
                fields = line.split(maxsplit=1)
                if len(fields) == 2:
                    sums[fields[1].strip().lstrip("*")] = fields[0].lower()
    except FileNotFoundError:
        pass
    return sums


def _write_sums(downloads_dir: str, sums: Mapping[str, str]) -> None:
    path = os.path.join(downloads_dir, SUMS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    os.replace(tmp, path)


def _record_sum(downloads_dir: str, name: str, digest: str) -> None:
    sums = _read_sums(downloads_dir)
    sums[name] = digest
    _write_sums(downloads_dir, sums)


def _drop_sum(downloads_dir: str, name: str) -> None:
    sums = _read_sums(downloads_dir)
    if sums.pop(name, None) is not None:
        _write_sums(downloads_dir, sums)


# --------------------------------------------------------------------------------------------
# Extraction


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, progress: bool = True) -> bool:
    """Extract a zip into ``dest`` once (marker ``dest/.extracted-<archive name>``).

    Every member name is checked before anything is written: absolute paths, drive letters and
    ``..`` components are refused (zip-slip), as is a path that resolves outside ``dest``.

    Returns:
        True if extracted now, False if the marker said it already was.

    Raises:
        CaptioningError: an unsafe member name (nothing is extracted).
    """
    archive, dest = os.fspath(archive), os.fspath(dest)
    name = os.path.basename(archive)
    marker = _marker(dest, name)
    if os.path.exists(marker):
        logger.info("%s: already extracted into %s (delete %s to extract again)", name, dest, marker)
        return False
    os.makedirs(dest, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_member(info.filename, dest, archive)
        logger.info("%s: extracting %d files into %s", name, len(members), dest)
        bar = Progress(f"extracting {name}", sum(i.file_size for i in members), enabled=progress)
        done = 0
        try:
            for info in members:
                zf.extract(info, dest)
                done += info.file_size
                bar.update(done)
        finally:
            bar.close()
    tmp = marker + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"archive": name, "files": len(members)}, f)
    os.replace(tmp, marker)
    return True


def _check_member(member: str, dest: str, archive: str) -> None:
    """Refuse a member name that would be written outside ``dest``."""
    name = member.replace("\\", "/")
    parts = name.split("/")
    unsafe = name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts
    if not unsafe:
        root = os.path.realpath(dest)
        target = os.path.realpath(os.path.join(root, *[p for p in parts if p]))
        unsafe = os.path.commonpath([root, target]) != root
    if unsafe:
        raise CaptioningError(
            f"{archive}: member {member!r} would be written outside {dest}; refusing to "
            "extract this archive (it is not the genuine file: delete it and rerun)"
        )


def _marker(dest: str, archive_name: str) -> str:
    return os.path.join(dest, f".extracted-{archive_name}")


