"""GLEU (Wu et al. 2016, "Google BLEU") through NLTK, with every reference of an image.

For one hypothesis and one reference: all n-grams with ``min_len <= n <= max_len`` are counted
in both; ``matches`` = size of the multiset intersection; GLEU = ``matches / max(#hyp n-grams,
#ref n-grams)`` = min(precision, recall). With several references NLTK keeps the reference with
the highest ratio. Corpus GLEU (NLTK ``corpus_gleu``) sums those best ``matches`` and
denominators over images and divides once (longer captions weigh more); per-image scores are
``sentence_gleu``. Columns: "GLEU-1-4" (``max_len=4``) and "GLEU-1-2" (``max_len=2``), the two
the study reported.
"""

from collections.abc import Sequence

from nltk.translate.gleu_score import corpus_gleu
from nltk.translate.gleu_score import sentence_gleu as _nltk_sentence_gleu

from keras_captioning.metrics._validation import tokenize_sentence
from keras_captioning.metrics.errors import MetricInputError
from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.tokenizer import TokenizerSpec


class Gleu(Metric):
    """NLTK GLEU over n-gram orders ``min_len..max_len`` with all references per image.

    Args:
        min_len, max_len: n-gram orders (1 and 4 give "GLEU-1-4"; 1 and 2 give "GLEU-1-2").
        tokenizer: see :class:`keras_captioning.metrics.metric.Metric`.
    """

    def __init__(self, min_len: int = 1, max_len: int = 4, tokenizer: TokenizerSpec = "ptb"):
        super().__init__(tokenizer)
        if not (isinstance(min_len, int) and isinstance(max_len, int) and 1 <= min_len <= max_len):
            raise MetricInputError(f"min_len/max_len: need 1 <= min_len <= max_len, got {min_len}, {max_len}")
        self.min_len = min_len
        self.max_len = max_len
        self.names = (f"GLEU-{min_len}-{max_len}",)

    def score_tokenized(self, references, hypotheses):
        corpus = corpus_gleu(references, hypotheses, min_len=self.min_len, max_len=self.max_len)
        per_image = [
            float(_nltk_sentence_gleu(refs, hyp, min_len=self.min_len, max_len=self.max_len))
            for refs, hyp in zip(references, hypotheses)
        ]
        return float(corpus), per_image


def sentence_gleu(
    references: str | Sequence[str],
    hypothesis: str,
    min_len: int = 1,
    max_len: int = 4,
    tokenizer: TokenizerSpec = "ptb",
) -> float:
    """NLTK sentence GLEU of one caption (string) against its reference strings."""
    _, refs, hyp = tokenize_sentence(references, hypothesis, tokenizer)
    return float(_nltk_sentence_gleu(refs, hyp, min_len=min_len, max_len=max_len))
