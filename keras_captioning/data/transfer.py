"""HTTP download of one file with resume (``Range``), size checks and one-line errors (standard library only)."""

from __future__ import annotations

import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request

from keras_captioning.errors import CaptioningError
from keras_captioning.utils import MIB, Progress, human_bytes

logger = logging.getLogger("keras_captioning.data.download")

CHUNK_BYTES = MIB
USER_AGENT = "keras-captioning (python urllib)"

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
            f"{url}: transfer stopped at {human_bytes(size)} of {human_bytes(total)} (connection closed early); "
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
    bar = Progress(os.path.basename(url), total, start=offset, enabled=progress)
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
                        f"{url}: transfer interrupted at {human_bytes(done)}"
                        f"{' of ' + human_bytes(total) if total else ''} ({reason}); "
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


