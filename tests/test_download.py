"""keras_captioning.data.download against a local HTTP server (127.0.0.1 only) serving tiny stand-in zips."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from keras_captioning.data import download, transfer
from keras_captioning.data.download import (
    _Progress,
    download_coco,
    extract_archive,
    part_url,
    sha256_file,
)
from keras_captioning.errors import CaptioningError

ANNOTATIONS, TRAIN, VAL, KARPATHY = (
    "annotations_trainval2014.zip",
    "train2014.zip",
    "val2014.zip",
    "caption_datasets.zip",
)


# ---------------------------------------------------------------------------------------------
# Stand-in archives and a Range-aware server


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    # Stored, not deflated: the JPEG stand-ins stay as large as their bytes (resume needs a few
    # chunks) and a flipped byte is easy to place inside a member.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2014, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def _jpeg(seed: int, size: int = 40_000) -> bytes:
    rng = random.Random(seed)
    return b"\xff\xd8\xff\xe0" + bytes(rng.getrandbits(8) for _ in range(size)) + b"\xff\xd9"


COCO_TRAIN = {
    "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg"}],
    "annotations": [{"id": 10, "image_id": 1, "caption": "a red circle"}],
}
KARPATHY_JSON = {
    "images": [
        {
            "filepath": "train2014",
            "filename": "COCO_train2014_000000000001.jpg",
            "cocoid": 1,
            "split": "train",
            "sentences": [{"raw": "a red circle"}],
        }
    ]
}


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    return {
        ANNOTATIONS: _zip(
            {
                "annotations/captions_train2014.json": json.dumps(COCO_TRAIN).encode(),
                "annotations/captions_val2014.json": json.dumps(COCO_TRAIN).encode(),
            }
        ),
        TRAIN: _zip({f"train2014/COCO_train2014_00000000000{i}.jpg": _jpeg(i) for i in (1, 2)}),
        VAL: _zip({f"val2014/COCO_val2014_00000000000{i}.jpg": _jpeg(10 + i) for i in (1, 2)}),
        KARPATHY: _zip(
            {
                "dataset_coco.json": json.dumps(KARPATHY_JSON).encode(),
                "dataset_flickr8k.json": b'{"images": []}',
            }
        ),
    }


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless ``server.ignore_range``;
    sends only ``server.truncate_after`` body bytes (with the full Content-Length) when set,
    after which it waits ``server.stall`` seconds before closing."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        name = self.path.lstrip("/")
        server.requests.append((name, self.headers.get("Range")))
        data = server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.truncate_after is not None:
            body = body[: server.truncate_after]  # then the connection closes: a short transfer
        self.wfile.write(body)
        if server.stall:
            self.wfile.flush()
            time.sleep(server.stall)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server(archives):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.ignore_range = False
    httpd.truncate_after = None
    httpd.stall = 0.0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    # Keyed by request path: the mirror lives under /mirror/, as --base-url mirrors often do.
    httpd.files = {f"mirror/{k}": v for k, v in archives.items()}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _names(requests):
    return [(name.removeprefix("mirror/"), rng) for name, rng in requests]


def _run(dest, server_or_url, **kwargs):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    kwargs.setdefault("progress", False)
    kwargs.setdefault("timeout", 5)
    kwargs.setdefault("expected", {})
    return download_coco(dest, base_url=url, **kwargs)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------------
# Tests


def test_full_download_and_extraction(tmp_path, server, archives, caplog):
    dest = tmp_path / "coco"
    with caplog.at_level(logging.INFO, logger="keras_captioning"):
        result = _run(dest, server)

    assert result["parts"] == ["annotations", "train2014", "val2014", "karpathy"]
    assert json.loads((dest / "annotations" / "captions_train2014.json").read_text()) == COCO_TRAIN
    assert (dest / "annotations" / "captions_val2014.json").is_file()
    assert sorted(os.listdir(dest / "train2014")) == [
        "COCO_train2014_000000000001.jpg",
        "COCO_train2014_000000000002.jpg",
    ]
    assert (dest / "train2014" / "COCO_train2014_000000000002.jpg").read_bytes() == _jpeg(2)
    assert len(os.listdir(dest / "val2014")) == 2
    assert json.loads((dest / "dataset_coco.json").read_text()) == KARPATHY_JSON
    assert (dest / "dataset_flickr8k.json").is_file()

    downloads = dest / "downloads"
    assert not list(downloads.glob("*.part"))
    sums = (downloads / "SHA256SUMS").read_text().splitlines()
    for name, data in archives.items():
        assert (downloads / name).read_bytes() == data
        assert (dest / f".extracted-{name}").is_file()
        assert f"{sha256_file(downloads / name)}  {name}" in sums
    assert result["sha256"]["karpathy"] == sha256_file(downloads / KARPATHY)
    assert result["archives"]["train2014"] == str(downloads / TRAIN)
    assert result["paths"]["captions_train"] == str(dest / "annotations" / "captions_train2014.json")

    text = caplog.text
    assert re.search(r"about \d+\.\d GiB in total", text)  # the total, before starting
    assert f"data.captions={dest / 'annotations' / 'captions_train2014.json'}" in text
    assert f"data.images={dest / 'train2014'}" in text
    assert f"data.captions={dest / 'dataset_coco.json'}" in text
    assert {name for name, _ in _names(server.requests)} == set(archives)


def test_resume_sends_range_and_is_byte_identical(tmp_path, server, archives):
    dest = tmp_path / "coco"
    data = archives[TRAIN]
    half = len(data) // 2
    (dest / "downloads").mkdir(parents=True)
    (dest / "downloads" / f"{TRAIN}.part").write_bytes(data[:half])

    _run(dest, server, parts=["train2014"])

    assert _names(server.requests) == [(TRAIN, f"bytes={half}-")]
    assert (dest / "downloads" / TRAIN).read_bytes() == data
    assert not (dest / "downloads" / f"{TRAIN}.part").exists()
    assert len(os.listdir(dest / "train2014")) == 2


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, archives, caplog):
    dest = tmp_path / "coco"
    data = archives[VAL]
    (dest / "downloads").mkdir(parents=True)
    # Bytes that differ from the archive: appending a full body to them would be caught.
    (dest / "downloads" / f"{VAL}.part").write_bytes(b"x" * (len(data) // 2))
    server.ignore_range = True

    with caplog.at_level(logging.INFO, logger="keras_captioning"):
        _run(dest, server, parts=["val2014"])

    assert _names(server.requests) == [(VAL, f"bytes={len(data) // 2}-")]
    assert (dest / "downloads" / VAL).read_bytes() == data
    assert "restarting from zero" in caplog.text


def test_complete_part_answered_416_is_finished_without_refetch(tmp_path, server, archives):
    dest = tmp_path / "coco"
    (dest / "downloads").mkdir(parents=True)
    (dest / "downloads" / f"{KARPATHY}.part").write_bytes(archives[KARPATHY])

    _run(dest, server, parts=["karpathy"])

    assert (dest / "downloads" / KARPATHY).read_bytes() == archives[KARPATHY]
    assert (dest / "dataset_coco.json").is_file()


def test_truncated_transfer_keeps_part_then_resumes(tmp_path, server, archives):
    dest = tmp_path / "coco"
    data = archives[TRAIN]
    server.truncate_after = len(data) // 3

    with pytest.raises(CaptioningError) as info:
        _run(dest, server, parts=["train2014"])
    message = str(info.value)
    assert "\n" not in message
    assert "rerun to resume" in message and f"{TRAIN}.part" in message
    part = dest / "downloads" / f"{TRAIN}.part"
    assert part.read_bytes() == data[: len(data) // 3]
    assert not (dest / "downloads" / TRAIN).exists()

    server.truncate_after = None
    _run(dest, server, parts=["train2014"])
    assert _names(server.requests)[-1] == (TRAIN, f"bytes={len(data) // 3}-")
    assert (dest / "downloads" / TRAIN).read_bytes() == data


def test_stalled_transfer_times_out_and_keeps_part(tmp_path, server, archives):
    dest = tmp_path / "coco"
    server.truncate_after, server.stall = 5000, 1.0
    started = time.monotonic()
    with pytest.raises(CaptioningError, match=r"no data for 0.3 s.*rerun to resume") as info:
        _run(dest, server, parts=["train2014"], timeout=0.3)
    assert time.monotonic() - started < 1.0
    assert "\n" not in str(info.value)
    assert (dest / "downloads" / f"{TRAIN}.part").read_bytes() == archives[TRAIN][:5000]


@pytest.mark.parametrize("kind", ["bad_crc", "not_a_zip"])
def test_corrupt_zip_is_deleted_with_clear_message(tmp_path, server, archives, kind):
    dest = tmp_path / "coco"
    data = bytearray(archives[VAL])
    if kind == "bad_crc":
        at = bytes(data).index(_jpeg(11)[:64]) + 1000  # inside the first member's stored bytes
        data[at] ^= 0xFF
    else:
        data = bytearray(b"<html>mirror error page</html>")
    server.files[f"mirror/{VAL}"] = bytes(data)

    with pytest.raises(CaptioningError) as info:
        _run(dest, server, parts=["val2014"])
    message = str(info.value)
    assert "\n" not in message
    assert "corrupt archive" in message and "rerun" in message
    assert not (dest / "downloads" / VAL).exists()
    assert not (dest / "downloads" / f"{VAL}.part").exists()
    sums = dest / "downloads" / "SHA256SUMS"
    assert not sums.exists() or VAL not in sums.read_text()
    assert not (dest / "val2014").exists()


def test_second_run_skips_download_and_extraction(tmp_path, server, archives, caplog):
    dest = tmp_path / "coco"
    _run(dest, server)
    server.requests.clear()

    with caplog.at_level(logging.INFO, logger="keras_captioning"):
        result = _run(dest, server)
    assert server.requests == []
    assert caplog.text.count("already downloaded, already extracted") == 4
    assert result["sha256"]["val2014"] == sha256_file(dest / "downloads" / VAL)

    # Without the marker: the archive is reused (sha256 matches SHA256SUMS) and extracted again.
    (dest / f".extracted-{TRAIN}").unlink()
    (dest / "train2014" / "COCO_train2014_000000000001.jpg").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="keras_captioning"):
        _run(dest, server, parts=["train2014"])
    assert server.requests == []
    assert "already downloaded (sha256 matches" in caplog.text
    assert (dest / "train2014" / "COCO_train2014_000000000001.jpg").read_bytes() == _jpeg(1)


def test_unreachable_server_fails_fast_with_one_line(tmp_path):
    url = _closed_port_url()
    started = time.monotonic()
    with pytest.raises(CaptioningError) as info:
        _run(tmp_path / "coco", url, parts=["karpathy"], timeout=2)
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert "\n" not in message
    host = url.removeprefix("http://")
    assert message.startswith(f"cannot reach {host} (")
    assert "offline" in message and "--base-url" in message
    assert f"{url}/{KARPATHY}" in message and os.path.join(str(tmp_path / "coco"), "downloads") in message


def test_http_404_names_the_url(tmp_path, server):
    del server.files[f"mirror/{KARPATHY}"]
    with pytest.raises(CaptioningError, match=r"404") as info:
        _run(tmp_path / "coco", server, parts=["karpathy"])
    assert f"{server.url}/{KARPATHY}" in str(info.value)
    assert "\n" not in str(info.value)


def test_hand_placed_archive_is_checked_and_used_offline(tmp_path, archives, caplog):
    dest = tmp_path / "coco"
    (dest / "downloads").mkdir(parents=True)
    (dest / "downloads" / KARPATHY).write_bytes(archives[KARPATHY])

    with caplog.at_level(logging.INFO, logger="keras_captioning"):
        result = _run(dest, _closed_port_url(), parts=["karpathy"])
    assert (dest / "dataset_coco.json").is_file()
    assert result["sha256"]["karpathy"] in (dest / "downloads" / "SHA256SUMS").read_text()
    assert "not downloaded by this tool" in caplog.text


def test_expected_size_and_sha256_are_checked(tmp_path, server, archives):
    with pytest.raises(CaptioningError, match=r"offers \d+ bytes but caption_datasets.zip has 123"):
        _run(tmp_path / "a", server, parts=["karpathy"], expected={KARPATHY: {"size": 123}})
    assert not (tmp_path / "a" / "downloads" / KARPATHY).exists()

    wrong = {KARPATHY: {"size": len(archives[KARPATHY]), "sha256": "0" * 64}}
    with pytest.raises(CaptioningError, match=r"corrupt archive \(sha256 .* instead of 000000000000"):
        _run(tmp_path / "b", server, parts=["karpathy"], expected=wrong)
    assert not (tmp_path / "b" / "downloads" / KARPATHY).exists()

    right = {
        KARPATHY: {"size": len(archives[KARPATHY]), "sha256": hashlib.sha256(archives[KARPATHY]).hexdigest()}
    }
    _run(tmp_path / "c", server, parts=["karpathy"], expected=right)
    assert (tmp_path / "c" / "dataset_coco.json").is_file()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "ok/../../evil.txt", "C:/evil.txt"])
def test_zip_slip_member_is_refused(tmp_path, server, member):
    server.files[f"mirror/{KARPATHY}"] = _zip({"dataset_coco.json": b"{}", member: b"owned"})
    dest = tmp_path / "deep" / "coco"
    with pytest.raises(CaptioningError, match="would be written outside") as info:
        _run(dest, server, parts=["karpathy"])
    assert repr(member) in str(info.value)
    assert not (dest / f".extracted-{KARPATHY}").exists()
    assert not (dest / "dataset_coco.json").exists()  # checked before anything is written
    assert not (tmp_path / "deep" / "evil.txt").exists()


def test_unknown_part_is_refused(tmp_path):
    with pytest.raises(CaptioningError, match=r"--parts: unknown part\(s\) 'test2014'"):
        download_coco(tmp_path, parts=["test2014"], progress=False)


def test_part_url_uses_base_url_for_the_file_name():
    assert part_url("karpathy") == download.PARTS["karpathy"].url
    assert part_url("train2014", "http://mirror.example/coco/") == "http://mirror.example/coco/train2014.zip"
    assert part_url("annotations", "http://m") == "http://m/annotations_trainval2014.zip"


def test_progress_lines_when_not_a_tty(tmp_path, server, capsys, monkeypatch):
    monkeypatch.setattr(transfer, "CHUNK_BYTES", 1024)  # ~80 reads for the ~80 KiB stand-in
    _run(tmp_path / "coco", server, parts=["train2014"], progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(TRAIN)]
    assert 10 <= len(lines) <= 21  # one line per ~5 %, never a flood
    assert re.fullmatch(rf"{TRAIN}: 100\.0% .* MiB/s ETA 0:00:00", lines[-1])


def test_progress_on_a_tty_is_rate_limited():
    class FakeTTY(io.StringIO):
        def isatty(self):
            return True

    stream = FakeTTY()
    bar = _Progress("x.zip", 10_000, stream=stream)
    for done in range(0, 10_001, 10):
        bar.update(done)
    bar.close()
    frames = stream.getvalue().split("\r")
    assert len(frames) <= 4  # 1000 updates within a fraction of a second -> a handful of redraws
    assert "100.0%" in frames[-1] and frames[-1].endswith("\n")


def test_extract_archive_marker(tmp_path, archives):
    archive = tmp_path / KARPATHY
    archive.write_bytes(archives[KARPATHY])
    assert extract_archive(archive, tmp_path / "out", progress=False) is True
    assert extract_archive(archive, tmp_path / "out", progress=False) is False


def test_cli_coco_data(tmp_path, server, capsys):
    from keras_captioning.cli import main

    assert (
        main(["coco-data", "--dest", str(tmp_path / "coco"), "--base-url", server.url, "--parts", "karpathy"])
        == 0
    )
    assert (tmp_path / "coco" / "dataset_coco.json").is_file()

    assert (
        main(
            [
                "coco-data",
                "--dest",
                str(tmp_path / "x"),
                "--base-url",
                _closed_port_url(),
                "--parts",
                "annotations",
            ]
        )
        == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "offline" in err[0]
