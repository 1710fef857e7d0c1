"""ROUGE-L in pure Python, matching pycocoevalcap's ``Rouge`` (Lin 2004, COCO's variant).

Per image, with ``lcs(r, h)`` the length of the longest common subsequence of tokens:
``P = max over references of lcs/len(h)`` and ``R = max over references of lcs/len(r)``
(maximized *separately*, so P and R may come from different references — pycocoevalcap's rule,
not "the best reference's F"); ``F = (1 + beta**2) * P * R / (R + beta**2 * P)`` with
``beta = 1.2``, and 0 when P or R is 0 (empty hypothesis, no common word). Corpus score: the
mean of the per-image scores.
"""

from collections.abc import Sequence

from keras_captioning.metrics._validation import tokenize_sentence
from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.tokenizer import TokenizerSpec


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (O(len(a)*len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b, start=1):
            if token_a == token_b:
                current.append(previous[j - 1] + 1)
            else:
                current.append(max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_score(references: Sequence[Sequence[str]], hypothesis: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L F of one tokenized hypothesis against its tokenized references (module rule)."""
    precision = 0.0
    recall = 0.0
    for ref in references:
        lcs = lcs_length(ref, hypothesis)
        if hypothesis:
            precision = max(precision, lcs / len(hypothesis))
        if ref:
            recall = max(recall, lcs / len(ref))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


class RougeL(Metric):
    """ROUGE-L (LCS F-measure, beta 1.2) with pycocoevalcap's multi-reference rule.

    Args:
        beta: recall weight (1.2, as in pycocoevalcap).
        tokenizer: see :class:`keras_captioning.metrics.metric.Metric`.
    """

    names = ("ROUGE-L",)

    def __init__(self, beta: float = 1.2, tokenizer: TokenizerSpec = "ptb"):
        super().__init__(tokenizer)
        self.beta = float(beta)

    def score_tokenized(self, references, hypotheses):
        per_image = [rouge_l_score(refs, hyp, self.beta) for refs, hyp in zip(references, hypotheses)]
        return sum(per_image) / len(per_image), per_image


def sentence_rouge_l(
    references: str | Sequence[str], hypothesis: str, beta: float = 1.2, tokenizer: TokenizerSpec = "ptb"
) -> float:
    """ROUGE-L of one caption (string) against its reference strings."""
    _, refs, hyp = tokenize_sentence(references, hypothesis, tokenizer)
    return rouge_l_score(refs, hyp, beta)
