"""BLEU-1..4 through NLTK, with every reference of an image (pycocoevalcap's ``Bleu`` interface).

Corpus BLEU-n is NLTK's ``corpus_bleu`` with uniform weights ``(1/n,) * n``: clipped n-gram
counts are summed over all images (each hypothesis n-gram clipped by its largest count in any
one reference of that image), and the brevity penalty compares the summed hypothesis length
with the summed *closest* reference lengths (per image the reference length nearest the
hypothesis length, the shorter one on a tie). No smoothing at corpus level.

Agreement with pycocoevalcap's ``Bleu``, measured on 5 x 30 generated images with 5
references each: corpus BLEU-1..4 |delta| <= 7e-12, per-image (``smoothing=None``) |delta|
<= 9e-5; the tests require 1e-9 and 1e-3. Both use the same clipped counts and the same
"closest" rule; they differ only in:

* zeros: BLEU-n is 0 when some order <= n has no match (exactly 0 here; NLTK itself returns
  about 1e-78 for that, through ``sys.float_info.min``);
* tiny constants: pycocoevalcap computes ``(matches + 1e-15) / (total + 1e-9)`` per order and
  ``(hyp_len + 1e-15) / (ref_len + 1e-9)``, so where we return exactly 0 (no match of some
  order) it returns a small positive number (about 1e-5 for a corpus BLEU-4, up to 1e-4 for
  one image), and its other values differ in the 12th digit;
* hypotheses shorter than n words: NLTK's ``modified_precision`` guards its denominator with
  ``max(1, count)``, so such a hypothesis adds one (unmatchable) n-gram to the corpus
  denominator of order n; pycocoevalcap adds zero. Only captions of fewer than 4 words are
  affected (empty ones included).

Per-image scores are NLTK's ``sentence_bleu`` with a smoothing function (default Chen & Cherry
``method1``: a zero count of matches becomes 0.1, so one missing 4-gram does not zero the
score). ``smoothing=None`` gives unsmoothed sentence BLEU, which pycocoevalcap's per-image
list matches up to the same constants (its per-image value for a caption shorter than n words
is about 0.03 instead of 0).
"""

import warnings
from collections.abc import Callable, Sequence

from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

from keras_captioning.metrics._validation import tokenize_sentence
from keras_captioning.metrics.errors import MetricInputError
from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.tokenizer import TokenizerSpec

SmoothingSpec = None | str | Callable


def _smoothing_function(smoothing: SmoothingSpec):
    if smoothing is None or smoothing == "method0" or callable(smoothing):
        return None if smoothing == "method0" else smoothing  # method0 = unsmoothed, exact zeros
    if isinstance(smoothing, str) and smoothing.startswith("method"):
        function = getattr(SmoothingFunction(), smoothing, None)
        if function is not None:
            return function
    raise MetricInputError(
        f"smoothing: unknown value {smoothing!r}; use None, 'method0'..'method7' or a callable"
    )


def _cumulative_weights(n: int):
    return [tuple([1.0 / k] * k) for k in range(1, n + 1)]


class _ZeroAwareNoSmoothing:
    """NLTK's ``method0`` that remembers which n-gram orders had no match.

    NLTK stands ``sys.float_info.min`` in for a zero precision (so that ``log`` works) and
    returns values like 1e-78 where BLEU is 0; the remembered orders let us report exactly 0.
    """

    def __init__(self):
        self.zero_orders = set()

    def __call__(self, p_n, *args, **kwargs):
        self.zero_orders = {i for i, p in enumerate(p_n) if p.numerator == 0}
        return SmoothingFunction().method0(p_n, *args, **kwargs)


def _nltk_bleu(references, hypotheses, weights, smoothing_function) -> list[float]:
    """NLTK ``corpus_bleu`` for several cumulative weights; exact zeros when unsmoothed."""
    unsmoothed = smoothing_function is None
    if unsmoothed:
        smoothing_function = _ZeroAwareNoSmoothing()
    with warnings.catch_warnings():
        # NLTK warns once per zero-count order; a zero score is the documented answer here.
        warnings.simplefilter("ignore", UserWarning)
        value = corpus_bleu(references, hypotheses, weights=weights, smoothing_function=smoothing_function)
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if unsmoothed:
        values = [
            0.0 if any(i in smoothing_function.zero_orders for i in range(len(w))) else v
            for v, w in zip(values, weights)
        ]
    return values


class Bleu(Metric):
    """Cumulative BLEU-1..n with all references per image (NLTK ``corpus_bleu``).

    ``compute_score`` returns ``([BLEU-1, ..., BLEU-n], [[per-image BLEU-1], ..., [per-image
    BLEU-n]])`` like pycocoevalcap. See the module docstring for the exact rules.

    Args:
        n: highest n-gram order (4 gives BLEU-1..BLEU-4).
        smoothing: smoothing of the per-image (sentence) scores only: a name of NLTK's
            ``SmoothingFunction`` methods (default ``"method1"``), a callable, or ``None``.
        tokenizer: see :class:`keras_captioning.metrics.metric.Metric`.
    """

    def __init__(self, n: int = 4, smoothing: SmoothingSpec = "method1", tokenizer: TokenizerSpec = "ptb"):
        super().__init__(tokenizer)
        if not isinstance(n, int) or n < 1:
            raise MetricInputError(f"n: must be a positive integer, got {n!r}")
        self.n = n
        self.smoothing = smoothing
        self._smoothing_function = _smoothing_function(smoothing)
        self._weights = _cumulative_weights(n)
        self.names = tuple(f"BLEU-{k}" for k in range(1, n + 1))

    def score_tokenized(self, references, hypotheses):
        corpus = _nltk_bleu(references, hypotheses, self._weights, None)
        # NLTK's sentence_bleu is corpus_bleu of one sentence
        per_image = [
            _nltk_bleu([refs], [hyp], self._weights, self._smoothing_function)
            for refs, hyp in zip(references, hypotheses)
        ]
        per_order = [[scores[k] for scores in per_image] for k in range(self.n)]
        return corpus, per_order

    def score_corpus_tokenized(self, references, hypotheses):
        # one NLTK corpus_bleu call; no per-image sentence BLEU
        return _nltk_bleu(references, hypotheses, self._weights, None)


def sentence_bleu(
    references: str | Sequence[str],
    hypothesis: str,
    n: int = 4,
    smoothing: SmoothingSpec = "method1",
    tokenizer: TokenizerSpec = "ptb",
) -> list[float]:
    """Sentence BLEU-1..n of one caption against its references (strings), smoothed.

    Returns ``[BLEU-1, ..., BLEU-n]``; ``smoothing`` as in :class:`Bleu` (default ``method1``).
    """
    _, refs, hyp = tokenize_sentence(references, hypothesis, tokenizer)
    return _nltk_bleu([refs], [hyp], _cumulative_weights(n), _smoothing_function(smoothing))


def corpus_bleu_scores(
    references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]], n: int = 4
) -> list[float]:
    """Unsmoothed corpus BLEU-1..n of already tokenized captions (NLTK ``corpus_bleu``)."""
    return _nltk_bleu(references, hypotheses, _cumulative_weights(n), None)

