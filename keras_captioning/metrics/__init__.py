"""Caption metrics over ``{image_id: [caption, ...]}`` dicts, the official COCO scorer's interface.

Pure Python (NLTK, jiwer, numpy); never imports TensorFlow or Keras. Every metric class has
``compute_score(gts, res) -> (corpus_score, per_image_scores)`` like pycocoevalcap's; all
share one documented tokenizer (:mod:`.tokenizer`, PTB-like by default).

>>> from keras_captioning.metrics import score_all
>>> gts = {1: ["A man rides a wave.", "A surfer on a big wave."], 2: ["Two dogs play in snow."]}
>>> res = {1: ["a man riding a wave"], 2: ["two dogs playing in the snow"]}
>>> scores = score_all(gts, res, metrics=["BLEU-1", "ROUGE-L"])  # {"BLEU-1": ..., "ROUGE-L": ...}

Columns: "BLEU-1".."BLEU-4", "METEOR" (NLTK), "METEOR-1.5" (official jar, opt-in), "GLEU-1-4",
"GLEU-1-2", "WER", "CIDEr-D", "ROUGE-L" (see :mod:`.scoring`). ``study_compat`` reproduces the
study's (wrong) single-reference calls and numbers. :mod:`.diversity` adds how varied the
captions are (distinct captions, vocabulary used, novel, Div-1/2, lengths).
"""

from keras_captioning.metrics.bleu import Bleu, corpus_bleu_scores, sentence_bleu
from keras_captioning.metrics.cider_d import CiderD
from keras_captioning.metrics.diversity import DIVERSITY_COLUMNS, WORD_COUNT_COLUMNS, diversity_scores
from keras_captioning.metrics.errors import MetricInputError, WordNetNotFoundError
from keras_captioning.metrics.gleu import Gleu, sentence_gleu
from keras_captioning.metrics.meteor import Meteor, sentence_meteor
from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.official_meteor import OfficialMeteor
from keras_captioning.metrics.rouge_l import RougeL, sentence_rouge_l
from keras_captioning.metrics.scoring import (
    ALL_METRICS,
    DEFAULT_METRICS,
    compute_all,
    per_image_all,
    score_all,
)
from keras_captioning.metrics.tokenizer import (
    PTB_PUNCTUATION,
    get_tokenizer,
    tokenize_ptb,
    tokenize_whitespace,
)
from keras_captioning.metrics.wer import Wer, sentence_wer, wer_matrix
from keras_captioning.metrics.wordnet import find_wordnet, load_wordnet

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "DIVERSITY_COLUMNS",
    "PTB_PUNCTUATION",
    "Bleu",
    "CiderD",
    "Gleu",
    "Meteor",
    "Metric",
    "MetricInputError",
    "OfficialMeteor",
    "RougeL",
    "Wer",
    "WordNetNotFoundError",
    "WORD_COUNT_COLUMNS",
    "compute_all",
    "corpus_bleu_scores",
    "diversity_scores",
    "find_wordnet",
    "get_tokenizer",
    "load_wordnet",
    "per_image_all",
    "score_all",
    "sentence_bleu",
    "sentence_gleu",
    "sentence_meteor",
    "sentence_rouge_l",
    "sentence_wer",
    "tokenize_ptb",
    "tokenize_whitespace",
    "wer_matrix",
]
