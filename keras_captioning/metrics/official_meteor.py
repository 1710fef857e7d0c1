"""The official METEOR 1.5 (column "METEOR-1.5"): the Java jar the COCO scorer ships.

This is the METEOR that COCO papers report (Show and Tell 23.7, Show Attend and Tell 23.9). It
is *not* NLTK's METEOR (column "METEOR", :class:`keras_captioning.metrics.meteor.Meteor`).

It runs ``meteor-1.5.jar`` from the installed ``pycocoevalcap`` with pycocoevalcap's own
command (``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm``) and protocol (one
``SCORE ||| ref ||| ... ||| hyp`` line per image, then one ``EVAL ||| stats ||| ...`` line; the
jar answers the per-image scores and then the corpus score computed from the summed
statistics). It drives the process itself instead of calling ``pycocoevalcap.meteor.Meteor``
because that class can hang forever: it reads the jar's output with a blocking ``readline``,
never drains the jar's stderr, and its ``__del__`` waits on a lock a failed call never
releases. Here:

* text is sanitized first: ``|`` (the field separator) and every control, format or
  separator character (newline, carriage return, U+2028, zero-width space, lone surrogates;
  a newline would split one request into two and desynchronize the protocol) become spaces,
  runs of spaces collapse;
* all ``SCORE`` lines are written at once (one write, in a thread) and the answers read by a
  reader thread; the whole call has a deadline (``timeout``, default 120 s + 0.05 s per image,
  counted from the JVM start; the JVM itself needs about 8 s to load the paraphrase table);
* ``score_all``/``compute_all`` call :meth:`OfficialMeteor.prepare` before tokenizing, so the
  JVM loads while the other metrics are computed (an unused JVM is killed by ``release``);
  the jar is killed once every answer has been read;
* on any failure (no ``java``, no ``pycocoevalcap``, timeout, crash, unparsable output) the
  result is NaN for the corpus and every image, with one logged warning — never an exception
  or a hang.
"""

import importlib.util
import logging
import math
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.tokenizer import TokenizerSpec

logger = logging.getLogger(__name__)

_JAR_NAME = "meteor-1.5.jar"
# Every ASCII character of Unicode category C* or Z*: controls 0..31, DEL; space is kept.
_ASCII_CONTROLS_TO_SPACE = {code: " " for code in [*range(32), 127]}


class _MeteorFailure(Exception):
    """Why the jar gave no usable answer (turned into NaN + a warning)."""


def sanitize_for_meteor(text: str) -> str:
    """Makes a caption safe for the jar's line protocol (see module docstring)."""
    text = text.replace("|", " ")
    if text.isascii():  # the common case: control characters (and DEL) are the only C/Z ones
        text = text.translate(_ASCII_CONTROLS_TO_SPACE)
    else:
        text = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    return " ".join(text.split())


def find_meteor_jar() -> Path | None:
    """``meteor-1.5.jar`` inside the installed ``pycocoevalcap``, or None."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap.meteor.meteor")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    jar = Path(spec.origin).parent / _JAR_NAME
    return jar if jar.is_file() else None


class OfficialMeteor(Metric):
    """Official METEOR 1.5 through pycocoevalcap's jar, guarded (NaN instead of crash/hang).

    Args:
        tokenizer: see :class:`keras_captioning.metrics.metric.Metric`; the tokens are joined
            with spaces and the jar normalizes them again (``-norm``).
        timeout: seconds for the whole call (JVM start included); default 120 + 0.05/image.
        java: the ``java`` executable (default: found on ``PATH``).
        jar: path of ``meteor-1.5.jar`` (default: the one in ``pycocoevalcap``).
    """

    names = ("METEOR-1.5",)

    def __init__(
        self,
        tokenizer: TokenizerSpec = "ptb",
        timeout: float | None = None,
        java: str | None = None,
        jar: str | None = None,
    ):
        super().__init__(tokenizer)
        self.timeout = timeout
        self.java = java
        self.jar = jar

    def _resolve(self):
        java = shutil.which(self.java or "java")
        jar = Path(self.jar) if self.jar else find_meteor_jar()
        return java, jar

    def unavailable_reason(self) -> str | None:
        """None when the jar can run, else why not (no java on PATH / no pycocoevalcap jar)."""
        java, jar = self._resolve()
        if java is None:
            return f"no {self.java or 'java'!r} executable on PATH (install a Java runtime)"
        if jar is None or not jar.is_file():
            return f"{_JAR_NAME} not found (pip install pycocoevalcap)"
        return None

    def prepare(self) -> None:
        """Starts the JVM now (it needs ~8 s to load), for the next scoring call to use."""
        self.release()
        if self.unavailable_reason() is None:
            try:
                self._session = _Session(*self._resolve())
            except _MeteorFailure:
                self._session = None  # scoring reports it (and retries the start once)

    def release(self) -> None:
        """Stops a JVM started by :meth:`prepare` that no scoring call used."""
        session = getattr(self, "_session", None)
        self._session = None
        if session is not None:
            session.stop()

    def score_tokenized(self, references, hypotheses):
        count = len(hypotheses)
        reason = self.unavailable_reason()
        if reason is None:
            try:
                return self._run(references, hypotheses)
            except _MeteorFailure as failure:
                reason = str(failure)
        else:
            self.release()
        logger.warning("METEOR-1.5 is NaN for %d image(s): %s", count, reason)
        return math.nan, [math.nan] * count

    def _run(self, references, hypotheses):
        session = getattr(self, "_session", None)
        self._session = None
        if session is None:
            session = _Session(*self._resolve())
        try:
            lines = []
            for refs, hyp in zip(references, hypotheses):
                fields = [sanitize_for_meteor(" ".join(ref)) for ref in refs]
                fields.append(sanitize_for_meteor(" ".join(hyp)))
                lines.append("SCORE ||| " + " ||| ".join(fields))
            timeout = self.timeout if self.timeout is not None else 120.0 + 0.05 * len(lines)
            deadline = session.started + timeout  # the JVM start counts
            return self._talk(session.process, lines, deadline, timeout, session.stderr)
        finally:
            session.stop()

    def _talk(self, process, lines: list[str], deadline: float, timeout: float, stderr):
        answers: queue.Queue[str | None] = queue.Queue()

        def read_all():
            for raw in process.stdout:
                answers.put(raw.decode("utf-8", errors="replace").strip())
            answers.put(None)

        def write(text: str):
            def run():
                try:
                    process.stdin.write(text.encode("utf-8"))
                    process.stdin.flush()
                except (OSError, ValueError):
                    pass  # the reader reports the dead process
            threading.Thread(target=run, daemon=True).start()

        def next_line() -> str:
            remaining = deadline - time.monotonic()
            try:
                line = answers.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise _MeteorFailure(f"no answer from the jar within {timeout:.0f} s (killed)") from None
            if line is None:
                raise _MeteorFailure(f"the jar exited early (rc {process.poll()}): {_tail(stderr)}")
            return line

        threading.Thread(target=read_all, daemon=True).start()
        write("".join(line + "\n" for line in lines))
        stats = []
        for _ in lines:
            line = next_line()
            _floats(line)  # a stats line is a row of numbers; anything else means desync
            stats.append(line)
        write("EVAL ||| " + " ||| ".join(stats) + "\n")
        per_image = [_floats(next_line())[0] for _ in lines]
        corpus = _floats(next_line())[0]
        return corpus, per_image


class _Session:
    """A running jar: the process, its stderr file and its start time."""

    def __init__(self, java, jar):
        command = [java, "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
        self.stderr = tempfile.TemporaryFile()
        self.started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                command, cwd=str(jar.parent), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr
            )
        except OSError as error:
            self.stderr.close()
            raise _MeteorFailure(f"cannot start {java}: {error}") from error

    def stop(self) -> None:
        try:
            _stop(self.process)
        finally:
            self.stderr.close()


def _floats(line: str) -> list[float]:
    try:
        values = [float(field) for field in line.split()]
    except ValueError:
        values = []
    if not values:
        raise _MeteorFailure(f"unexpected output from the jar: {line[:200]!r}")
    return values


def _tail(stderr, limit: int = 300) -> str:
    try:
        stderr.flush()
        stderr.seek(0)
        text = stderr.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return "(no stderr)"
    text = " ".join(text.split())
    return text[-limit:] if text else "(no stderr)"


def _stop(process: subprocess.Popen) -> None:
    """Kills the jar: after a good run every answer has been read (letting the JVM shut down
    by itself only costs time), after a failed one it may hang."""
    process.kill()
    try:
        process.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

