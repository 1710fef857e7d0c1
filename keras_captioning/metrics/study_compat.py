"""The study's own metric calls, reproduced on purpose. THEY ARE WRONG; do not report them as BLEU.

The study's notebooks scored one validation image at a time against one reference caption:

``sentence_bleu(reference_words, hypothesis_words, weights)`` with ``reference_words`` a bare
list of words (not a list of references) and the hypothesis still ending in ``<end>``. NLTK
then takes every reference *word* as a separate reference made of *characters*:

* only a one-letter hypothesis word (``a``) can match (a character unigram), so the unigram
  precision ``p1`` is (number of such matches) / (hypothesis length incl. ``<end>``);
* no hypothesis bigram can match a character bigram of a word, so ``p2 = p3 = p4 = 0``;
* the "closest reference length" is a word's letter count, usually shorter than the
  hypothesis, so the brevity penalty is 1.

The NLTK of the time (3.2.5, which Google Colab shipped until 2022) then left every order from
the first zero-count one onwards out of the geometric mean (its ``method0``: "break" at the
first zero precision, then ``exp(sum(w_i * log p_i))`` over the remaining ``(w_i, p_i)``
pairs), so cumulative BLEU-n collapsed to ``p1 ** w1`` — ``p1``, ``p1**0.5``, ``p1**0.33``
(the study's BLEU-3 weights were ``(0.33, 0.33, 0.33, 0)``), ``p1**0.25`` — which *rises* with
n. Current NLTK keeps zero orders (as ``sys.float_info.min``) and returns about 0 for the same
call. :func:`old_nltk_sentence_bleu` implements the old rule explicitly.

The study's tables truncate (not round) to one decimal after x100: ``14**-0.33 = 0.41857`` was
printed as 41.8, ``14**-0.25 = 0.51697`` as 51.6.

GLEU (``sentence_gleu([reference_words], hypothesis_words, 1, 4)`` and ``(1, 2)``) was called
correctly, but on one reference and with ``<end>`` in the hypothesis. METEOR was
``single_meteor_score(reference_string, hypothesis_string)`` of an NLTK that split strings on
whitespace after lower-casing; WER was the bottom-right cell of a hand-written edit-distance
table (not divided by the reference length).
"""

import math
import warnings
from collections.abc import Sequence

from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.translate.bleu_score import brevity_penalty, closest_ref_length, modified_precision
from nltk.translate.bleu_score import sentence_bleu as _nltk_sentence_bleu
from nltk.translate.gleu_score import sentence_gleu as _nltk_sentence_gleu
from nltk.translate.meteor_score import single_meteor_score

from keras_captioning.metrics.bleu import sentence_bleu
from keras_captioning.metrics.wer import wer_matrix
from keras_captioning.metrics.wordnet import load_wordnet

#: The cumulative weights the study passed for BLEU-1..4 (note the 0.33s of BLEU-3).
STUDY_BLEU_WEIGHTS = ((1, 0, 0, 0), (0.5, 0.5, 0, 0), (0.33, 0.33, 0.33, 0), (0.25, 0.25, 0.25, 0.25))
#: Tokens the study's hypotheses could contain that a correct evaluation removes.
SPECIAL_TOKENS = ("<start>", "<end>", "<pad>", "<unk>")

Words = str | Sequence[str]


def _words(text: Words) -> list[str]:
    return text.split() if isinstance(text, str) else list(text)


def old_nltk_sentence_bleu(references, hypothesis: Sequence[str], weights: Sequence[float]) -> float:
    """NLTK 3.2.5's unsmoothed ``sentence_bleu``: zero-count orders leave the geometric mean.

    Same arguments as NLTK's ``sentence_bleu`` (``references`` a list of references). The
    n-gram precisions, closest reference length and brevity penalty are NLTK's (unchanged
    since); the old rule is the combination: 0 if no unigram matches, else keep the
    precisions up to (not including) the first zero one and return
    ``bp * exp(sum(w_i * log p_i))`` over ``zip(weights, kept precisions)``.
    """
    precisions = [modified_precision(references, hypothesis, i) for i in range(1, len(weights) + 1)]
    if precisions[0].numerator == 0:
        return 0.0
    kept = []
    for p in precisions:
        if p.numerator == 0:
            break  # NLTK 3.2.5 method0 stopped here; the later orders vanished from the mean
        kept.append(p)
    hyp_len = len(hypothesis)
    bp = brevity_penalty(closest_ref_length(references, hyp_len), hyp_len)
    return bp * math.exp(math.fsum(w * math.log(p) for w, p in zip(weights, kept)))


def study_bleu(reference: Words, hypothesis: Words) -> list[float]:
    """The study's BLEU-1..4 (fractions, not x100) for one reference and one hypothesis.

    Args:
        reference: the reference caption, a string (split on whitespace) or its word list.
        hypothesis: the predicted words as the study had them, ``<end>`` included.
    """
    ref_words = _words(reference)
    hyp_words = _words(hypothesis)
    # The study's bug, kept on purpose: the word list itself is passed as "the references".
    return [old_nltk_sentence_bleu(ref_words, hyp_words, w) for w in STUDY_BLEU_WEIGHTS]


def study_gleu(reference: Words, hypothesis: Words) -> tuple[float, float]:
    """The study's (GLEU 1-4, GLEU 1-2): one reference, ``<end>`` left in the hypothesis."""
    ref_words = _words(reference)
    hyp_words = _words(hypothesis)
    return (
        float(_nltk_sentence_gleu([ref_words], hyp_words, min_len=1, max_len=4)),
        float(_nltk_sentence_gleu([ref_words], hyp_words, min_len=1, max_len=2)),
    )


def study_meteor(reference: str, hypothesis: str, wordnet: WordNetCorpusReader | None = None) -> float:
    """The study's ``single_meteor_score(reference_string, hypothesis_string)``: old NLTK split
    both strings on whitespace after lower-casing; one reference."""
    return float(
        single_meteor_score(
            reference.lower().split(), hypothesis.lower().split(), wordnet=wordnet or load_wordnet()
        )
    )


def study_wer(reference: Words, hypothesis: Words) -> int:
    """The study's "WER": the raw word edit distance (bottom-right of its printed matrix)."""
    return int(wer_matrix(_words(reference), _words(hypothesis))[-1, -1])


def truncate_like_study(value: float) -> float:
    """x100 and truncated to one decimal, as the study's tables print (0.41857 -> 41.8)."""
    return math.floor(value * 1000 + 1e-9) / 10


def explain_study_bleu(reference: Words, hypothesis: Words) -> dict[str, object]:
    """The study's BLEU next to what NLTK returns today for the same call and a correct BLEU.

    Returns a dict with ``hypothesis_length`` (incl. ``<end>``), ``matches`` and ``p1`` (the
    character-level unigram precision the bug leaves), ``closest_reference_length`` (letters
    of a word), ``brevity_penalty``, ``study_bleu`` (old rule, BLEU-1..4), ``study_bleu_x100``
    (as printed, truncated), ``current_nltk_same_call`` (today's NLTK, ~0 from BLEU-2 on), and
    ``correct_bleu`` / ``correct_bleu_unsmoothed``: sentence BLEU-1..4 with the reference as a
    proper one-element list of words, ``<start>``/``<end>``/``<pad>``/``<unk>`` removed, PTB
    tokenization, smoothing ``method1`` / none.
    """
    ref_words = _words(reference)
    hyp_words = _words(hypothesis)
    p1 = modified_precision(ref_words, hyp_words, 1)
    closest = closest_ref_length(ref_words, len(hyp_words)) if ref_words else 0
    study = study_bleu(ref_words, hyp_words)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        current = [float(_nltk_sentence_bleu(ref_words, hyp_words, w)) for w in STUDY_BLEU_WEIGHTS]
    clean_hyp = " ".join(w for w in hyp_words if w not in SPECIAL_TOKENS)
    clean_ref = " ".join(w for w in ref_words if w not in SPECIAL_TOKENS)
    return {
        "hypothesis_length": len(hyp_words),
        "matches": int(p1.numerator),
        "p1": float(p1.numerator) / float(p1.denominator),
        "closest_reference_length": closest,
        "brevity_penalty": float(brevity_penalty(closest, len(hyp_words))),
        "study_bleu": study,
        "study_bleu_x100": [truncate_like_study(v) for v in study],
        "current_nltk_same_call": current,
        "correct_bleu": sentence_bleu([clean_ref], clean_hyp, smoothing="method1"),
        "correct_bleu_unsmoothed": sentence_bleu([clean_ref], clean_hyp, smoothing=None),
    }
