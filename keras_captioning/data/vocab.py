"""Caption normalization and the word vocabulary (ids, encode/decode, JSON file).

Token conventions shared by the whole package: ``<pad>`` = 0, ``<unk>`` = 1,
``<start>`` = 2, ``<end>`` = 3, then words by descending training frequency with ties
broken alphabetically, so the same captions always give the same ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from keras_captioning.data.records import check_json_format, read_json
from keras_captioning.errors import CaptioningError

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
SPECIAL_TOKENS = (PAD, UNK, START, END)
FORMAT_NAME = "keras_captioning.vocabulary"
FORMAT_VERSION = 1

_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`]")
_NOT_WORD = re.compile(r"[^a-z0-9 ]+")
_SPACES = re.compile(r" +")


def normalize_caption(text: str) -> str:
    """Normalize a caption to lowercase ASCII words separated by single spaces.

    Steps: Unicode NFKC (full-width and compatibility forms become plain letters),
    lowercase, apostrophes removed (``"man's"`` -> ``"mans"``), every other character
    outside ``[a-z0-9 ]`` replaced by a space, whitespace collapsed, ends stripped.
    Non-ASCII letters and emoji therefore disappear (``"café"`` -> ``"caf"``); a caption
    made only of them normalizes to ``""``.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _NOT_WORD.sub(" ", _APOSTROPHES.sub("", text))
    return _SPACES.sub(" ", text).strip()


def check_max_length(max_length) -> None:
    """``max_length`` counts ``<start>`` and ``<end>``, so it must be at least 2 (None: no cap)."""
    if max_length is not None and max_length < 2:
        raise CaptioningError(f"max_length: must be at least 2 (<start> and <end>), got {max_length}")


class Vocabulary:
    """Word <-> id mapping with the four special tokens first.

    Build it from training captions only (``Vocabulary.build``), save it next to the
    features (``save``/``load``) and compare runs by ``fingerprint()``.

    Attributes:
        id_to_word: list of tokens; index = id. The first four are ``SPECIAL_TOKENS``.
        word_to_id: dict token -> id.
        counts: frequency of every word in the captions it was built from, including words
            cut by ``max_words`` (useful for coverage statistics).
    """

    pad_id, unk_id, start_id, end_id = range(4)

    def __init__(self, id_to_word: Sequence[str], counts: dict[str, int] | None = None):
        id_to_word = list(id_to_word)
        if tuple(id_to_word[:4]) != SPECIAL_TOKENS:
            raise ValueError(f"id_to_word must start with {SPECIAL_TOKENS}, got {id_to_word[:4]}")
        if len(set(id_to_word)) != len(id_to_word):
            raise ValueError("id_to_word holds a token twice")
        self.id_to_word = id_to_word
        self.word_to_id = {word: index for index, word in enumerate(id_to_word)}
        self.counts = dict(counts or {})

    @classmethod
    def build(cls, captions: Iterable[str], max_words: int | None = None) -> Vocabulary:
        """Count the words of normalized ``captions`` and keep the ``max_words`` most frequent.

        Args:
            captions: raw caption texts (training captions only, so val/test words stay unknown).
            max_words: number of real words kept, not counting the 4 special tokens;
                None keeps every word.
        """
        if max_words is not None and max_words < 0:
            raise CaptioningError(f"max_words: must be >= 0 or None, got {max_words}")
        counts = Counter(word for caption in captions for word in normalize_caption(caption).split())
        ranked = sorted(counts, key=lambda word: (-counts[word], word))
        return cls([*SPECIAL_TOKENS, *ranked[:max_words]], dict(counts))

    def __len__(self) -> int:
        """Vocabulary size including the special tokens (the model's output dimension)."""
        return len(self.id_to_word)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.id_to_word == other.id_to_word and self.counts == other.counts

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, fingerprint={self.fingerprint()[:12]})"

    def encode(self, caption: str, max_length: int | None = None) -> list[int]:
        """Normalize and encode one caption as ``[<start>, w1, ..., wn, <end>]``.

        Unknown words become ``<unk>``. ``max_length`` counts ``<start>`` and ``<end>``:
        a longer caption keeps its first ``max_length - 1`` tokens (``<start>`` and the first
        ``max_length - 2`` words) and ends with ``<end>``.
        """
        return self.truncate(self._encode_full(caption), max_length)

    def encode_batch(self, captions: Sequence[str], max_length: int | None = None) -> tuple[np.ndarray, int]:
        """Encode captions into one right-padded int32 array.

        Returns:
            ``(ids, num_truncated)``: ids has shape ``(N, L)`` with ``L = max_length`` when
            given, else the longest encoded caption; ``num_truncated`` counts captions cut
            by ``max_length`` (see ``encode``).
        """
        full = [self._encode_full(caption) for caption in captions]
        num_truncated = 0 if max_length is None else sum(len(ids) > max_length for ids in full)
        encoded = [self.truncate(ids, max_length) for ids in full]
        width = max_length if max_length is not None else max(map(len, encoded), default=0)
        batch = np.full((len(encoded), width), self.pad_id, dtype=np.int32)
        for row, ids in enumerate(encoded):
            batch[row, : len(ids)] = ids
        return batch, num_truncated

    def _encode_full(self, caption: str) -> list[int]:
        words = normalize_caption(caption).split()
        return [self.start_id, *(self.word_to_id.get(w, self.unk_id) for w in words), self.end_id]

    def truncate(self, ids: list[int], max_length: int | None) -> list[int]:
        """The one truncation rule: at most ``max_length`` ids, ``<end>`` kept last (None: all)."""
        if max_length is None:
            return ids
        check_max_length(max_length)
        return ids if len(ids) <= max_length else [*ids[: max_length - 1], self.end_id]

    def has_word(self, ids: Iterable[int]) -> bool:
        """The one rule for "a caption has a real word": some id is not <pad>, <start> or <end>
        (``<unk>`` counts: it stands for a word)."""
        specials = (self.pad_id, self.start_id, self.end_id)
        return any(int(token) not in specials for token in ids)

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> str:
        """Turn ids back into a space-separated caption.

        With ``strip_special`` (the default) decoding stops at the first ``<end>`` and drops
        ``<pad>`` and ``<start>``; otherwise every token is written, specials included.
        """
        words = []
        for token in ids:
            token = int(token)
            if not 0 <= token < len(self.id_to_word):
                raise ValueError(f"token id {token} is outside the vocabulary (size {len(self)})")
            if strip_special:
                if token == self.end_id:
                    break
                if token in (self.pad_id, self.start_id):
                    continue
            words.append(self.id_to_word[token])
        return " ".join(words)

    def fingerprint(self) -> str:
        """sha256 hex digest of the canonical JSON of ``id_to_word`` (same ids -> same fingerprint)."""
        canonical = json.dumps(self.id_to_word, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (atomically: a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint(),
            "id_to_word": self.id_to_word,
            "counts": self.counts,
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a file written by ``save``; any malformed content raises CaptioningError naming it."""
        data = read_json(path)
        check_json_format(data, path, "vocabulary")
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise CaptioningError(f'{path}: not a vocabulary file (no "format": "{FORMAT_NAME}")')
        if data.get("version") != FORMAT_VERSION:
            raise CaptioningError(
                f"{path}: vocabulary format version {data.get('version')!r} is not supported "
                f"(this keras-captioning reads version {FORMAT_VERSION}); rebuild the vocabulary"
            )
        id_to_word, counts = data.get("id_to_word"), data.get("counts", {})
        if not isinstance(id_to_word, list) or not all(isinstance(w, str) for w in id_to_word):
            raise CaptioningError(f"{path}: 'id_to_word' must be a list of strings")
        if not isinstance(counts, dict) or not all(isinstance(c, int) for c in counts.values()):
            raise CaptioningError(f"{path}: 'counts' must map words to integers")
        try:
            vocab = cls(id_to_word, counts)
        except ValueError as err:
            raise CaptioningError(f"{path}: {err}") from None
        if "fingerprint" in data and data["fingerprint"] != vocab.fingerprint():
            raise CaptioningError(
                f"{path}: fingerprint does not match id_to_word; the file was edited or corrupted"
            )
        return vocab
