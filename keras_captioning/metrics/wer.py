"""Word error rate (lower is better) through jiwer, with a documented multi-reference rule.

Edit distance ``d(ref, hyp)`` = the minimum number of word substitutions, deletions and
insertions turning ``ref`` into ``hyp`` (jiwer, i.e. Levenshtein on tokens).

* Per image: for every reference, ``wer = d(ref, hyp) / len(ref)``; the image's WER is the
  smallest one (ties: the smaller ``d``, then the earlier reference). That reference is the
  image's *chosen* reference. Empty references (e.g. only punctuation) are skipped unless all
  are empty; against an empty reference the WER is 0.0 for an empty hypothesis and 1.0 else.
* Corpus: ``sum over images of d(chosen ref, hyp) / sum over images of len(chosen ref)``
  (a word-weighted micro average, like jiwer's own corpus WER for one reference per image);
  0.0 when both sums are 0, 1.0 when only the denominator is.

WER can exceed 1 (a hypothesis much longer than the reference).

:func:`wer_matrix` returns the full dynamic-programming table the study printed.
"""

from collections.abc import Sequence

import jiwer
import numpy as np

from keras_captioning.metrics._validation import tokenize_sentence
from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.tokenizer import TokenizerSpec, get_tokenizer


def _encode(tokens: Sequence[str], vocabulary: dict[str, str]) -> str:
    # jiwer re-splits strings on spaces: map every token to a space-free code so tokens that
    # contain whitespace (custom tokenizers) still count as one word.
    return " ".join(vocabulary.setdefault(token, f"w{len(vocabulary)}") for token in tokens)


def edit_distances(pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[int]:
    """Word edit distances ``d(ref, hyp)`` for ``[(ref_tokens, hyp_tokens), ...]`` (one jiwer call)."""
    if not pairs:
        return []
    vocabulary: dict[str, str] = {}
    refs = [_encode(ref, vocabulary) for ref, _ in pairs]
    hyps = [_encode(hyp, vocabulary) for _, hyp in pairs]
    output = jiwer.process_words(refs, hyps)
    distances = []
    for chunks in output.alignments:
        d = 0
        for chunk in chunks:
            if chunk.type in ("substitute", "delete"):
                d += chunk.ref_end_idx - chunk.ref_start_idx
            elif chunk.type == "insert":
                d += chunk.hyp_end_idx - chunk.hyp_start_idx
        distances.append(d)
    return distances


def _choose(refs: Sequence[Sequence[str]], hyp: Sequence[str], distances: Sequence[int]) -> tuple[float, int, int]:
    """(image WER, d to the chosen reference, chosen reference length) under the module rule."""
    candidates = [
        (d / len(ref), d, k, len(ref)) for k, (ref, d) in enumerate(zip(refs, distances)) if len(ref) > 0
    ]
    if not candidates:  # every reference is empty
        return (0.0 if len(hyp) == 0 else 1.0), len(hyp), 0
    wer, d, _, length = min(candidates)
    return wer, d, length


class Wer(Metric):
    """Word error rate: per image the minimum over references; corpus = sum d / sum ref length.

    See the module docstring for the exact rule. Lower is better.
    """

    names = ("WER",)

    def score_tokenized(self, references, hypotheses):
        pairs = [(ref, hyp) for refs, hyp in zip(references, hypotheses) for ref in refs]
        distances = edit_distances(pairs)
        per_image = []
        total_d = 0
        total_len = 0
        start = 0
        for refs, hyp in zip(references, hypotheses):
            wer, d, length = _choose(refs, hyp, distances[start : start + len(refs)])
            start += len(refs)
            per_image.append(wer)
            total_d += d
            total_len += length
        if total_len == 0:
            corpus = 0.0 if total_d == 0 else 1.0
        else:
            corpus = total_d / total_len
        return corpus, per_image


def _tokens(text: str | Sequence[str], tokenizer: TokenizerSpec) -> list[str]:
    return get_tokenizer(tokenizer)(text) if isinstance(text, str) else list(text)


def sentence_wer(
    references: str | Sequence[str], hypothesis: str, tokenizer: TokenizerSpec = "ptb"
) -> float:
    """WER of one caption: the minimum over its reference strings (see module docstring)."""
    _, ref_tokens, hyp_tokens = tokenize_sentence(references, hypothesis, tokenizer)
    distances = edit_distances([(ref, hyp_tokens) for ref in ref_tokens])
    return _choose(ref_tokens, hyp_tokens, distances)[0]


def wer_matrix(
    reference: str | Sequence[str], hypothesis: str | Sequence[str], tokenizer: TokenizerSpec = "ptb"
) -> np.ndarray:
    """The word-level Levenshtein table, as the study printed it.

    Strings are tokenized with ``tokenizer``; token lists are used as given.

    Returns:
        int64 array of shape ``(len(ref) + 1, len(hyp) + 1)``: ``m[i, j]`` is the edit distance
        between the first ``i`` reference words and the first ``j`` hypothesis words; the
        bottom-right cell ``m[-1, -1]`` is the edit distance (the study's "WER" value, not
        divided by the reference length).
    """
    ref = _tokens(reference, tokenizer)
    hyp = _tokens(hypothesis, tokenizer)
    table = np.zeros((len(ref) + 1, len(hyp) + 1), dtype=np.int64)
    table[:, 0] = np.arange(len(ref) + 1)
    table[0, :] = np.arange(len(hyp) + 1)
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                table[i, j] = table[i - 1, j - 1]
            else:
                table[i, j] = 1 + min(table[i - 1, j - 1], table[i - 1, j], table[i, j - 1])
    return table
