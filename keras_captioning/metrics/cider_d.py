"""CIDEr-D (Vedantam et al. 2015) in pure Python, matching pycocoevalcap's ``Cider`` exactly.

pycocoevalcap's class is called "CIDEr" but computes CIDEr-D (clipping + length penalty), the
number COCO papers report. The definition, for ``n = 1..4``:

* Document frequency ``df(g)`` = number of images *in the scored set* whose references contain
  n-gram ``g`` (no external corpus statistics); ``N`` = number of scored images.
* A caption's vector for order n: ``w(g) = count(g) * (log(N) - log(max(1, df(g))))`` for each
  of its n-grams (raw counts; the cosine below normalizes).
* Similarity of hypothesis h with reference r at order n:
  ``sum_g min(w_h(g), w_r(g)) * w_r(g) / (|w_h| * |w_r|)`` (hypothesis weights clipped by the
  reference's; the division is skipped when a norm is 0, leaving 0), times the Gaussian length
  penalty ``exp(-(len_h - len_r)**2 / (2 * sigma**2))`` with ``sigma = 6``.
* Image score = ``10 * mean over n of (mean over references of the similarity)``; corpus score
  = mean of the image scores.

Caption length is measured as the official code does: the number of bigrams, ``max(0, L-1)``
for ``L`` words, so differences equal word-length differences unless a caption is empty (and
there is no length penalty when ``n = 1``).

Consequences worth knowing: CIDEr-D of a **single image is 0** (``log(1/1) = 0`` makes every
weight 0), and an n-gram found in every image's references weighs 0 too; scores depend on
which images are scored together.
"""

import math
from collections import Counter
from collections.abc import Sequence

from keras_captioning.metrics.errors import MetricInputError
from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.tokenizer import TokenizerSpec


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """Counts of all n-grams (as tuples) of orders 1..n in ``tokens``."""
    counts = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


class CiderD(Metric):
    """CIDEr-D over the scored set (document frequencies from its references).

    Args:
        n: highest n-gram order (4).
        sigma: standard deviation of the Gaussian length penalty (6.0).
        tokenizer: see :class:`keras_captioning.metrics.metric.Metric`.
    """

    names = ("CIDEr-D",)

    def __init__(self, n: int = 4, sigma: float = 6.0, tokenizer: TokenizerSpec = "ptb"):
        super().__init__(tokenizer)
        if not isinstance(n, int) or n < 1:
            raise MetricInputError(f"n: must be a positive integer, got {n!r}")
        self.n = n
        self.sigma = float(sigma)

    def _order_counts(self, tokens: Sequence[str]) -> list[Counter]:
        """n-gram counts per order (order k at index k-1), in first-occurrence order."""
        return [Counter(zip(*[tokens[i:] for i in range(k)])) for k in range(1, self.n + 1)]

    def _vector(self, counts: list[Counter], log_num_images: float, idf: dict) -> tuple[list[dict], list[float], int]:
        """tf-idf weights per order, their Euclidean norms, and the bigram-count length."""
        weights = []
        norms = []
        for order_counts in counts:
            order_weights = {}
            square = 0.0
            for gram, count in order_counts.items():
                weight = count * idf[gram]
                order_weights[gram] = weight
                square += weight * weight
            weights.append(order_weights)
            norms.append(math.sqrt(square))
        length = sum(counts[1].values()) if self.n > 1 else 0
        return weights, norms, length

    def _similarity(self, hyp, ref) -> list[float]:
        hyp_weights, hyp_norms, hyp_length = hyp
        ref_weights, ref_norms, ref_length = ref
        penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2.0 * self.sigma**2))
        values = []
        for order in range(self.n):
            ref_order = ref_weights[order]
            value = 0.0
            for gram, weight in hyp_weights[order].items():
                ref_weight = ref_order.get(gram)
                if ref_weight:  # an absent (or zero-weight) n-gram adds exactly 0
                    value += (weight if weight < ref_weight else ref_weight) * ref_weight
            if hyp_norms[order] != 0 and ref_norms[order] != 0:
                value /= hyp_norms[order] * ref_norms[order]
            values.append(value * penalty)
        return values

    def score_tokenized(self, references, hypotheses):
        # Counts and vectors depend only on a caption's tokens: computed once per distinct one.
        counts_cache: dict[tuple, list[Counter]] = {}

        def order_counts(tokens) -> list[Counter]:
            key = tuple(tokens)
            counts = counts_cache.get(key)
            if counts is None:
                counts = counts_cache[key] = self._order_counts(key)
            return counts

        ref_counts = [[order_counts(ref) for ref in refs] for refs in references]
        hyp_counts = [order_counts(hyp) for hyp in hypotheses]
        df = Counter()
        for counts_of_image in ref_counts:
            df.update(set().union(*(c.keys() for counts in counts_of_image for c in counts)))
        log_num_images = math.log(float(len(references)))

        class _Idf(dict):
            # log(N) - log(max(1, df(g))), computed once per distinct n-gram
            def __missing__(self, gram):
                value = self[gram] = log_num_images - math.log(max(1.0, df[gram]))
                return value

        idf = _Idf()
        vectors: dict[int, tuple] = {}  # by id() of the cached counts: one per distinct caption

        def vector(counts):
            key = id(counts)
            found = vectors.get(key)
            if found is None:
                found = vectors[key] = self._vector(counts, log_num_images, idf)
            return found

        per_image = []
        for hyp, refs in zip(hyp_counts, ref_counts):
            hyp_vector = vector(hyp)
            totals = [0.0] * self.n
            for ref in refs:
                for order, value in enumerate(self._similarity(hyp_vector, vector(ref))):
                    totals[order] += value
            per_image.append(10.0 * (sum(totals) / self.n) / len(refs))
        return sum(per_image) / len(per_image), per_image
