"""CIDEr-D as a reward: fixed references and document frequencies, many captions per call.

Self-critical training scores ``B * (K + 1)`` captions every step against the references of
their images. :class:`~keras_captioning.metrics.cider_d.CiderD` recomputes the document
frequencies and every reference vector on each call (its scores depend on the scored set);
here both are computed **once**, from a fixed reference set (the training split), and kept:

* every caption word becomes an integer code, and an n-gram of codes ``c_1..c_k`` one int64
  key ``sum_i (c_i + 1) * B**(k - i)`` (``B = 55108`` for n = 4, so ``B**4 < 2**63``; the
  ranges of different orders do not overlap, so a key also tells its order);
* per image: the sorted union of its references' n-gram keys, a (keys, R) matrix of their
  tf-idf weights, the (R, n) reference norms and the (R,) lengths;
* per call (numpy, vectorised over captions): the captions' n-gram keys and counts, their
  idf (``searchsorted`` in the sorted document-frequency table), norms, and one
  ``searchsorted`` per distinct image to match them with its references.

The definition is exactly :class:`CiderD`'s (clipped tf-idf cosine per order, Gaussian length
penalty on bigram counts with sigma 6, ``10 * mean over orders and references``), with
``N`` and ``df`` taken from the reference set given here: scoring every image of that set
with ``score_tokens`` gives ``CiderD().compute_score`` of the same set (a test checks it to
1e-9). An empty caption scores exactly 0.

With ``end_token`` set, the end of a caption is a word of its n-grams, as in
self-critical.pytorch's reward (its captions and references keep the END id): every reference
and every finished caption gets one extra token, so "... on a END" matches no reference and
a caption cut off by the length bound (no END sampled) earns no end n-grams. CIDEr-D of the
bare words barely punishes a caption that stops mid-phrase ("a dog runs through the"), and SCST
can learn such endings (on Flickr8k here it did not; it shortened the captions instead: README). The end token is in every reference, so its unigram has idf 0; its
bigrams to 4-grams carry the weight. An empty caption still scores exactly 0.

Memory: about 30 bytes per distinct n-gram per image (Flickr8k's 6 000 training images:
roughly 30 MB).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from keras_captioning.metrics.errors import MetricInputError
from keras_captioning.metrics.tokenizer import TokenizerSpec, get_tokenizer


def _key_base(n: int) -> int:
    """Largest B with B**n < 2**63: codes + 1 are base-B digits of an int64 key."""
    base = int((2**63 - 1) ** (1.0 / n))
    while base**n >= 2**63:
        base -= 1
    return base


class CiderDReward:
    """CIDEr-D of captions against fixed references, with precomputed reference vectors.

    Args:
        references: ``{image_id: [caption, ...]}``, the reference set; it fixes ``N`` (its
            number of images) and the document frequencies. Empty strings are dropped; an
            image needs at least one reference.
        words: optional id -> text table of a vocabulary (``""`` for ids that write nothing),
            for :meth:`score_ids`; each entry is tokenized once here.
        end_id: in :meth:`score_ids`, a row stops at its first ``end_id``.
        n: highest n-gram order (4). sigma: the length penalty's standard deviation (6.0).
        tokenizer: as every metric's (``"ptb"`` by default).
        end_token: None (the package's CIDEr-D) or a string no tokenized word equals: the
            END word appended to every reference and every finished non-empty caption (in
            :meth:`score_ids`, rows that reach ``end_id``; in the other methods, every caption).
    """

    def __init__(self, references: Mapping[Hashable, Sequence[str]], words: Sequence[str] | None = None,
                 end_id: int | None = None, n: int = 4, sigma: float = 6.0, tokenizer: TokenizerSpec = "ptb",
                 end_token: str | None = None):
        if not isinstance(n, int) or n < 1:
            raise MetricInputError(f"n: must be a positive integer, got {n!r}")
        if not references:
            raise MetricInputError("references: is empty; the reward needs a reference set")
        self.n = n
        self.sigma = float(sigma)
        self.end_id = end_id
        self._tokenize = get_tokenizer(tokenizer)
        self._base = _key_base(n)
        self._codes: dict[str, int] = {}
        if end_token is not None and (not isinstance(end_token, str) or not end_token):
            raise MetricInputError(f"end_token: expected None or a non-empty string, got {end_token!r}")
        # Code 0 when set: no tokenized word is looked up before it, and none can equal it
        # unless the tokenizer writes that exact string (checked below).
        self._end = None if end_token is None else self._encode([end_token])
        self.index = {}  # image_id -> slot
        ref_codes = []  # per image: list of int arrays
        for image_id, captions in references.items():
            captions = [captions] if isinstance(captions, str) else list(captions)
            tokens = [self._tokenize(c) for c in captions if c]
            if not tokens:
                raise MetricInputError(f"references[{image_id!r}]: has no reference caption")
            self.index[image_id] = len(ref_codes)
            if self._end is not None and any(end_token in t for t in tokens):
                raise MetricInputError(f"references[{image_id!r}]: a reference holds the end token "
                                       f"{end_token!r}; pick another end_token")
            ref_codes.append([self._ended(self._encode(t)) for t in tokens])
        self.num_images = len(ref_codes)
        self._log_n = math.log(float(self.num_images))
        self._build_references(ref_codes)
        # id -> codes of the vocabulary word (most ids: exactly one code).
        self._id_codes = None if words is None else [self._encode(self._tokenize(w)) if w else
                                                     np.zeros(0, np.int64) for w in words]

    # ------------------------------------------------------------------ setup

    def _encode(self, tokens: Sequence[str]) -> np.ndarray:
        codes = []
        for token in tokens:
            code = self._codes.get(token)
            if code is None:
                code = self._codes[token] = len(self._codes)
                if code + 1 >= self._base:
                    raise MetricInputError(f"more than {self._base - 2} distinct words; n={self.n} "
                                           "n-gram keys no longer fit in int64")
            codes.append(code)
        return np.asarray(codes, np.int64)

    def _ended(self, codes: np.ndarray) -> np.ndarray:
        """``codes`` with the end token appended (end_token set and the caption not empty)."""
        if self._end is None or codes.size == 0:
            return codes
        return np.concatenate([codes, self._end])

    def _keys(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, keys) of every n-gram of orders 1..n in ``codes`` (M, L) (-1 = no word)."""
        rows, keys = [], []
        digits = codes + 1  # 0 marks "no word"
        length = codes.shape[1]
        for k in range(1, self.n + 1):
            if length < k:
                break
            key = np.zeros((codes.shape[0], length - k + 1), np.int64)
            valid = np.ones(key.shape, bool)
            for i in range(k):
                part = digits[:, i : length - k + 1 + i]
                key = key * self._base + part
                valid &= part > 0
            r, c = np.nonzero(valid)
            rows.append(r)
            keys.append(key[r, c])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows), np.concatenate(keys)

    def _order(self, keys: np.ndarray) -> np.ndarray:
        """0-based n-gram order of each key (its number of base-B digits minus one)."""
        bounds = np.asarray([self._base**k for k in range(1, self.n)], np.int64)
        return np.searchsorted(bounds, keys, side="right")

    @staticmethod
    def _pad(code_lists: Sequence[np.ndarray]) -> np.ndarray:
        width = max((len(c) for c in code_lists), default=0)
        out = np.full((len(code_lists), width), -1, np.int64)
        for i, c in enumerate(code_lists):
            out[i, : len(c)] = c
        return out

    def _counts(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct (row, key) pairs of ``codes`` (M, L) and their counts, sorted by row then key."""
        rows, keys = self._keys(codes)
        order = np.lexsort((keys, rows))
        rows, keys = rows[order], keys[order]
        if rows.size == 0:
            return rows, keys, np.zeros(0, np.float64)
        first = np.ones(rows.size, bool)
        first[1:] = (rows[1:] != rows[:-1]) | (keys[1:] != keys[:-1])
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, rows.size)).astype(np.float64)
        return rows[starts], keys[starts], counts

    def _idf(self, keys: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self._df_keys, keys), max(self._df_keys.size - 1, 0))
        found = self._df_keys[pos] == keys if self._df_keys.size else np.zeros(keys.shape, bool)
        df = np.where(found, self._df_counts[pos] if self._df_keys.size else 0.0, 0.0)
        return self._log_n - np.log(np.maximum(1.0, df))

    def _build_references(self, ref_codes: list[list[np.ndarray]]) -> None:
        per_image = []  # (rows = ref index, keys, counts) per image
        unique_keys = []
        for refs in ref_codes:
            rows, keys, counts = self._counts(self._pad(refs))
            per_image.append((rows, keys, counts))
            unique_keys.append(np.unique(keys))
        all_keys = np.concatenate(unique_keys) if unique_keys else np.zeros(0, np.int64)
        self._df_keys, df_counts = np.unique(all_keys, return_counts=True)
        self._df_counts = df_counts.astype(np.float64)
        self._ref_keys, self._ref_weights, self._ref_norms, self._ref_lengths = [], [], [], []
        for refs, (rows, keys, counts) in zip(ref_codes, per_image):
            weights = counts * self._idf(keys)
            union, column = np.unique(keys, return_inverse=True)
            matrix = np.zeros((union.size, len(refs)), np.float64)
            matrix[column, rows] = weights
            norms = np.zeros(len(refs) * self.n, np.float64)
            np.add.at(norms, rows * self.n + self._order(keys), weights * weights)
            self._ref_keys.append(union)
            self._ref_weights.append(matrix)
            self._ref_norms.append(np.sqrt(norms).reshape(len(refs), self.n))
            self._ref_lengths.append(np.asarray([self._length(len(r)) for r in refs], np.float64))

    def _length(self, num_words: int) -> int:
        # CiderD's length: the number of bigrams (0 when n == 1).
        return max(0, num_words - 1) if self.n > 1 else 0

    # ------------------------------------------------------------------ scoring

    def score_tokens(self, image_ids: Sequence[Hashable], hypotheses: Sequence[Sequence[str]]) -> np.ndarray:
        """CIDEr-D of tokenized captions: ``hypotheses[m]`` against ``image_ids[m]``'s references.

        Returns float64 (M,).
        """
        return self._score([self._slot(i) for i in image_ids], [self._ended(self._encode(h)) for h in hypotheses])

    def score_captions(self, image_ids: Sequence[Hashable], captions: Sequence[str]) -> np.ndarray:
        """As :meth:`score_tokens` for raw caption strings (tokenized with the metric's tokenizer)."""
        return self.score_tokens(image_ids, [self._tokenize(c) for c in captions])

    def score_ids(self, image_ids: Sequence[Hashable], token_ids: np.ndarray) -> np.ndarray:
        """CIDEr-D of token-id rows (M, L): each row is read up to its first ``end_id``.

        Equals ``score_captions`` of the rows decoded through ``words`` and joined by spaces
        (with ``end_token``: for the rows that reach ``end_id``; a row cut off before it gets
        no end token).
        """
        if self._id_codes is None:
            raise MetricInputError("score_ids: construct the reward with words=... (the vocabulary)")
        token_ids = np.asarray(token_ids)
        codes = []
        for row in token_ids:
            row = row.tolist()
            finished = self.end_id is not None and self.end_id in row
            if finished:
                row = row[: row.index(self.end_id)]
            parts = [self._id_codes[t] for t in row]
            row_codes = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            codes.append(self._ended(row_codes) if finished else row_codes)
        return self._score([self._slot(i) for i in image_ids], codes)

    def _slot(self, image_id) -> int:
        if isinstance(image_id, (bytes, np.bytes_)) and image_id not in self.index:
            image_id = image_id.decode("utf-8")
        try:
            return self.index[image_id]
        except KeyError:
            raise MetricInputError(f"image id {image_id!r} is not in the reward's reference set") from None

    def _score(self, slots: list[int], codes: list[np.ndarray]) -> np.ndarray:
        num = len(codes)
        if num == 0:
            return np.zeros(0, np.float64)
        rows, keys, counts = self._counts(self._pad(codes))
        weights = counts * self._idf(keys)
        order = self._order(keys)
        hyp_norms = np.sqrt(np.bincount(rows * self.n + order, weights=weights * weights,
                                        minlength=num * self.n)).reshape(num, self.n)
        hyp_lengths = np.asarray([self._length(len(c)) for c in codes], np.float64)
        slots = np.asarray(slots)
        max_refs = max(self._ref_weights[s].shape[1] for s in set(slots.tolist()))
        sims = np.zeros((num, self.n, max_refs), np.float64)
        row_slot = slots[rows]
        for slot in np.unique(slots):
            pick = np.flatnonzero(row_slot == slot)
            ref_keys, ref_weights = self._ref_keys[slot], self._ref_weights[slot]
            pos = np.minimum(np.searchsorted(ref_keys, keys[pick]), ref_keys.size - 1)
            hit = ref_keys[pos] == keys[pick]
            pick, pos = pick[hit], pos[hit]
            ref_w = ref_weights[pos]  # (matches, R)
            contrib = np.minimum(weights[pick][:, None], ref_w) * ref_w
            np.add.at(sims, (rows[pick], order[pick], slice(0, ref_w.shape[1])), contrib)
        scores = np.zeros(num, np.float64)
        for slot in np.unique(slots):
            mine = np.flatnonzero(slots == slot)
            refs = self._ref_weights[slot].shape[1]
            sim = sims[mine, :, :refs]  # (m, n, R)
            denom = hyp_norms[mine][:, :, None] * self._ref_norms[slot].T[None]  # (m, n, R)
            sim = np.where(denom != 0, sim / np.where(denom != 0, denom, 1.0), sim)
            delta = hyp_lengths[mine][:, None] - self._ref_lengths[slot][None]  # (m, R)
            penalty = np.exp(-(delta**2) / (2.0 * self.sigma**2))
            scores[mine] = 10.0 * (sim * penalty[:, None, :]).sum(axis=(1, 2)) / self.n / refs
        return scores
