"""How varied a model's captions are: the columns every evaluation report and ``compare`` show.

Captioners trained with cross-entropy (and, at risk, with SCST) tend to give the same few
generic captions to many images; n-gram scores hardly show it. Columns, over the generated
captions of a split (``res``: ``{image_id: [caption, ...]}``, every caption counted):

==============  ==========================================================================
"distinct"      number of different captions (after tokenization)
"vocab used"    number of different words in them
"novel"         share of captions that are not, word for word, a training caption (NaN when
                the training captions are not given)
"Div-1"         distinct unigrams / all unigrams, over all captions together
"Div-2"         distinct bigrams / all bigrams, over all captions together
"length"        mean caption length in words
"ref length"    mean length of the references (every reference of ``gts`` once)
==============  ==========================================================================

Captions, references and training captions go through the metrics' shared tokenizer
(:mod:`.tokenizer`, PTB-like by default: lower-cased, punctuation removed), so "A dog." and
"a dog" are the same caption. Div-n with no n-gram at all (only empty or one-word captions)
is 0. Pure Python; no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

from keras_captioning.metrics.tokenizer import TokenizerSpec, get_tokenizer

#: Column names, in report order.
DIVERSITY_COLUMNS = ("distinct", "vocab used", "novel", "Div-1", "Div-2", "length", "ref length")
#: Columns that are plain numbers of words (reports show them as is, not x100 like the scores).
WORD_COUNT_COLUMNS = ("length", "ref length")


def diversity_scores(
    res: Mapping[Hashable, Sequence[str]],
    gts: Mapping[Hashable, Sequence[str]] | None = None,
    train_captions: Iterable[str] | None = None,
    tokenizer: TokenizerSpec = "ptb",
) -> dict:
    """The diversity columns of ``res`` (see the module docstring).

    Args:
        res: generated captions per image; every caption in the lists counts.
        gts: reference captions per image, for "ref length" (NaN without them).
        train_captions: the training split's captions, for "novel" (NaN without them).
        tokenizer: the metrics' tokenizer spec ("ptb", "whitespace" or a callable).

    Returns:
        ``{column: value}`` with ints for "distinct" and "vocab used", floats otherwise.
    """
    tokenize = get_tokenizer(tokenizer)
    captions = [tuple(tokenize(caption)) for captions in res.values() for caption in captions]
    scores = {
        "distinct": len(set(captions)),
        "vocab used": len({word for caption in captions for word in caption}),
        "novel": math.nan,
        "Div-1": distinct_ngram_ratio(captions, 1),
        "Div-2": distinct_ngram_ratio(captions, 2),
        "length": _mean(len(caption) for caption in captions),
        "ref length": math.nan,
    }
    if train_captions is not None and captions:
        seen = {tuple(tokenize(caption)) for caption in train_captions}
        scores["novel"] = sum(caption not in seen for caption in captions) / len(captions)
    if gts is not None:
        scores["ref length"] = _mean(len(tokenize(ref)) for refs in gts.values() for ref in refs)
    return scores


def distinct_ngram_ratio(captions: Iterable[Sequence[str]], n: int) -> float:
    """Distinct n-grams / all n-grams over the tokenized ``captions`` together (0.0 if none)."""
    total, distinct = 0, set()
    for words in captions:
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        distinct.update(grams)
    return len(distinct) / total if total else 0.0


def _mean(values: Iterable[int]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
