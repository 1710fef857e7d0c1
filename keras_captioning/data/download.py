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

import hashlib
import http.client
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from typing import NamedTuple, TextIO

from keras_captioning.errors import CaptioningError

logger = logging.getLogger(__name__)

MIB = 2**20
CHUNK_BYTES = MIB
USER_AGENT = "keras-captioning (python urllib)"
SUMS_FILE = "SHA256SUMS"
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


# --------------------------------------------------------------------------------------------
# Download


def download_file(
    url: str,
    downloads_dir: str | os.PathLike,
    *,
    timeout: float = 30,
    progress: bool = True,
    expected_size: int | None = None,
) -> str:
    """Download ``url`` into ``downloads_dir/<file name>``, resuming ``<file name>.part`` if present.

    A resumed request sends ``Range: bytes=<part size>-``; a 206 answer is appended, a 200
    answer restarts from zero. The finished size is checked against ``Content-Length`` (or the
    total of ``Content-Range``) before the ``.part`` is renamed (atomically).

    Returns:
        the path of the finished file.

    Raises:
        CaptioningError: one line, for an unreachable host, an HTTP error, an interrupted or
            short transfer (the ``.part`` is kept for the next run), or a size other than
            ``expected_size``.
    """
    downloads_dir = os.fspath(downloads_dir)
    name = _url_name(url)
    final = os.path.join(downloads_dir, name)
    part = final + ".part"
    os.makedirs(downloads_dir, exist_ok=True)

    total = None
    # A second round happens only after the server refused our resume offset (416 or a
    # Content-Range starting elsewhere): the .part is dropped and the file fetched from zero.
    for _ in range(2):
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                total = _content_range(exc.headers.get("Content-Range", ""))[1]
                exc.close()
                if total == offset:  # the .part was complete; only the rename was missing
                    break
                logger.warning(
                    "%s: the server cannot resume at byte %d; starting again from zero", name, offset
                )
                os.remove(part)
                continue
            raise _http_error(url, exc, downloads_dir) from None
        except ValueError as exc:  # "unknown url type" and friends
            raise CaptioningError(f"{url}: not a usable URL ({exc}); check --base-url") from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, refused, DNS, timeout
            raise _offline_error(url, exc, downloads_dir) from None

        with response:
            if response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range", ""))
                if start != offset:
                    logger.warning(
                        "%s: the server resumed at byte %s instead of %d; starting again from zero",
                        name,
                        start,
                        offset,
                    )
                    os.remove(part)
                    continue
                mode = "ab"
            else:
                if offset:
                    logger.info(
                        "%s: the server ignored the resume request (HTTP %d); restarting from zero",
                        name,
                        response.status,
                    )
                offset = 0
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.strip().isdigit() else None
                mode = "wb"
            if expected_size and total is not None and total != expected_size:
                raise CaptioningError(
                    f"{url}: the server offers {total} bytes but {name} has {expected_size}; "
                    "it serves a different file (check --base-url)"
                )
            _copy_body(response, url, part, mode, offset, total, timeout, progress)
        break
    else:
        raise CaptioningError(f"{url}: the server keeps refusing to resume; delete {part} and rerun")

    size = os.path.getsize(part)
    if total is not None and size < total:
        raise CaptioningError(
            f"{url}: transfer stopped at {_human(size)} of {_human(total)} (connection closed early); "
            f"rerun to resume (partial file kept: {part})"
        )
    if total is not None and size > total:
        os.remove(part)
        raise CaptioningError(
            f"{url}: received {size} bytes but the server announced {total}; "
            f"deleted {part}, rerun to download it again"
        )
    os.replace(part, final)
    return final


def _copy_body(
    response, url: str, part: str, mode: str, offset: int, total: int | None, timeout: float, progress: bool
) -> None:
    """Append the response body to ``part``; an interrupted read keeps what was written."""
    done = offset
    bar = _Progress(os.path.basename(url), total, start=offset, enabled=progress)
    try:
        with open(part, mode) as out:
            while True:
                try:
                    # read1: whatever has arrived, so a stall loses nothing already received
                    chunk = response.read1(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    bar.close()
                    reason = f"no data for {timeout:g} s" if isinstance(exc, TimeoutError) else _reason(exc)
                    raise CaptioningError(
                        f"{url}: transfer interrupted at {_human(done)}"
                        f"{' of ' + _human(total) if total else ''} ({reason}); "
                        f"rerun to resume (partial file kept: {part})"
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                bar.update(done)
    finally:
        bar.close()


def _content_range(value: str) -> tuple[int | None, int | None]:
    """``"bytes 10-99/100"`` -> (10, 100); ``"bytes */100"`` -> (None, 100); unknown parts None."""
    match = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _offline_error(url: str, exc: BaseException, downloads_dir: str) -> CaptioningError:
    host = urllib.parse.urlsplit(url).netloc or url
    return CaptioningError(
        f"cannot reach {host} ({_reason(exc)}): you seem to be offline; download {url} by hand into "
        f"{downloads_dir}{os.sep} and rerun, or pass --base-url for a mirror"
    )


def _http_error(url: str, exc: urllib.error.HTTPError, downloads_dir: str) -> CaptioningError:
    exc.close()
    if exc.code == 404:
        return CaptioningError(
            f"{url}: not found (HTTP 404); check the URL or --base-url (a mirror must serve {_url_name(url)})"
        )
    return CaptioningError(
        f"{url}: HTTP {exc.code} {exc.reason}; retry later, download it by hand into {downloads_dir}{os.sep} "
        "and rerun, or pass --base-url for a mirror"
    )


def _reason(exc: BaseException) -> str:
    """A short one-line reason for a network error."""
    reason = getattr(exc, "reason", exc)  # URLError wraps the socket error
    if isinstance(reason, BaseException):
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    else:
        text = str(reason)
    return " ".join(text.split())


def _url_name(url: str) -> str:
    return os.path.basename(urllib.parse.urlsplit(url).path)


# --------------------------------------------------------------------------------------------
# Verification


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        bar = _Progress(f"extracting {name}", sum(i.file_size for i in members), enabled=progress)
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


# --------------------------------------------------------------------------------------------
# Reporting


class _Progress:
    """Percentage, MiB/s and ETA of a transfer on stderr.

    On a terminal one line is redrawn at most every ``TTY_INTERVAL`` seconds; elsewhere (logs,
    CI) a new line is written at every ``STEP`` percent, or every ``UNKNOWN_INTERVAL`` seconds
    when the total is unknown.
    """

    TTY_INTERVAL = 0.25
    STEP = 5.0
    UNKNOWN_INTERVAL = 10.0

    def __init__(
        self,
        label: str,
        total: int | None,
        start: int = 0,
        stream: TextIO | None = None,
        enabled: bool = True,
    ):
        self.label, self.total, self.start = label, total or None, start
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and _isatty(self.stream)
        self.t0 = self.last = time.monotonic()
        self.done = start
        self.next_pct = self._pct_step(start) + self.STEP
        self.shown = None  # the byte count last written
        self.closed = False

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self.last >= self.TTY_INTERVAL:
                self._write(now, "\r")
        elif self.total:
            if 100.0 * done / self.total >= self.next_pct:
                self.next_pct = self._pct_step(done) + self.STEP
                self._write(now, "\n")
        elif now - self.last >= self.UNKNOWN_INTERVAL:
            self._write(now, "\n")

    def close(self) -> None:
        if self.closed or not self.enabled:
            return
        self.closed = True
        now = time.monotonic()
        if self.tty:
            self._write(now, "\r")
            self.stream.write("\n")
            self.stream.flush()
        elif self.shown != self.done:
            self._write(now, "\n")

    def _pct_step(self, done: int) -> float:
        if not self.total:
            return 0.0
        return (100.0 * done / self.total) // self.STEP * self.STEP

    def _write(self, now: float, lead: str) -> None:
        self.last, self.shown = now, self.done
        rate = (self.done - self.start) / max(now - self.t0, 1e-6)
        if self.total:
            remaining = max(self.total - self.done, 0)
            eta = _clock(remaining / rate) if rate > 0 else "?"
            pct = math.floor(1000.0 * self.done / self.total) / 10  # never "100.0%" before the end
            text = (
                f"{self.label}: {pct:5.1f}% "
                f"{_human(self.done)}/{_human(self.total)} {rate / MIB:.1f} MiB/s ETA {eta}"
            )
        else:
            text = f"{self.label}: {_human(self.done)} {rate / MIB:.1f} MiB/s"
        if lead == "\r":
            self.stream.write("\r" + text.ljust(79))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _human(n: int | float) -> str:
    """Bytes in binary units: ``"241.2 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
