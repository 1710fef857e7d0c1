"""METEOR as NLTK computes it (column "METEOR"); NOT the official METEOR 1.5 ("METEOR-1.5").

Per image: NLTK's ``meteor_score`` with every reference, i.e. the best
``single_meteor_score`` over the references. Each one aligns hypothesis and reference words in
three stages (exact, Porter stem, WordNet synonym), then
``Fmean = P*R / (alpha*P + (1-alpha)*R)`` with ``alpha=0.9`` and a fragmentation penalty
``gamma * (chunks/matches)**beta`` (``gamma=0.5``, ``beta=3``); score ``(1 - penalty) * Fmean``.
An identical 5-word caption scores ``1 - 0.5/5**3 = 0.996``; no match scores 0.

An NLTK quirk (3.10): the synonym stage runs on the Porter *stems* the stem stage leaves
behind, so a synonym matches only when both words are unchanged by the stemmer: "couch" finds
"sofa" (0.996 for "a dog on a couch" vs "a dog on a sofa"), but "large" (stem "larg") never
finds "big". "sprints" vs "runs" do not match at all (no shared synset lemma or stem).
Corpus score: the mean of the per-image scores (NLTK has no corpus METEOR).

Differences from the official METEOR 1.5 (:class:`~keras_captioning.metrics.official_meteor.OfficialMeteor`,
what COCO papers report): 1.5 has tuned English parameters (alpha 0.85, beta 0.2, gamma 0.6,
delta 0.75), a paraphrase table, function-word weighting, and aggregates sufficient statistics
over the corpus instead of averaging. The two columns are not comparable.

WordNet is found by :func:`keras_captioning.metrics.wordnet.load_wordnet` (NLTK data, else the
system's ``/usr/share/wordnet``), loaded on first use.
"""

from collections.abc import Sequence

from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.translate.meteor_score import meteor_score

from keras_captioning.metrics._validation import tokenize_sentence
from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.tokenizer import TokenizerSpec
from keras_captioning.metrics.wordnet import load_wordnet


class Meteor(Metric):
    """NLTK's METEOR with all references per image; corpus score = mean per-image score.

    Args:
        alpha, beta, gamma: NLTK's METEOR parameters (its defaults).
        wordnet: a ``WordNetCorpusReader``; default: :func:`load_wordnet` on first use.
        tokenizer: see :class:`keras_captioning.metrics.metric.Metric`.
    """

    names = ("METEOR",)

    def __init__(
        self,
        alpha: float = 0.9,
        beta: float = 3.0,
        gamma: float = 0.5,
        wordnet: WordNetCorpusReader | None = None,
        tokenizer: TokenizerSpec = "ptb",
    ):
        super().__init__(tokenizer)
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self._wordnet = wordnet

    @property
    def wordnet(self) -> WordNetCorpusReader:
        """The WordNet reader (loaded on first access; raises ``WordNetNotFoundError``)."""
        if self._wordnet is None:
            self._wordnet = load_wordnet()
        return self._wordnet

    def score_sentence(self, references: Sequence[Sequence[str]], hypothesis: Sequence[str]) -> float:
        """METEOR of one tokenized hypothesis against its tokenized references (best one)."""
        return float(
            meteor_score(
                references,
                hypothesis,
                wordnet=self.wordnet,
                alpha=self.alpha,
                beta=self.beta,
                gamma=self.gamma,
            )
        )

    def score_tokenized(self, references, hypotheses):
        per_image = [self.score_sentence(refs, hyp) for refs, hyp in zip(references, hypotheses)]
        return sum(per_image) / len(per_image), per_image


def sentence_meteor(
    references: str | Sequence[str],
    hypothesis: str,
    wordnet: WordNetCorpusReader | None = None,
    tokenizer: TokenizerSpec = "ptb",
) -> float:
    """NLTK METEOR of one caption (string) against its reference strings (best reference)."""
    tokenize, refs, hyp = tokenize_sentence(references, hypothesis, tokenizer)
    return Meteor(wordnet=wordnet, tokenizer=tokenize).score_sentence(refs, hyp)
