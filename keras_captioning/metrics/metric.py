"""The base class of every caption metric: the official COCO scorer's interface."""

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from keras_captioning.metrics._validation import tokenize_inputs, validate_inputs
from keras_captioning.metrics.tokenizer import TokenizerSpec, get_tokenizer


class Metric:
    """A caption metric with pycocoevalcap's ``compute_score(gts, res)`` interface.

    Subclasses set ``names`` (the column names they produce, e.g. ``("CIDEr-D",)`` or
    ``("BLEU-1", ..., "BLEU-4")``) and implement :meth:`score_tokenized`.

    Args:
        tokenizer: ``"ptb"`` (default, see :mod:`keras_captioning.metrics.tokenizer`),
            ``"whitespace"`` (already tokenized captions) or a callable ``str -> list[str]``.
    """

    names: tuple[str, ...] = ()

    def __init__(self, tokenizer: TokenizerSpec = "ptb"):
        self.tokenizer = get_tokenizer(tokenizer)

    @property
    def name(self) -> str:
        """The metric's name; for multi-column metrics (BLEU) the last column's family name."""
        return self.names[-1] if len(self.names) == 1 else self.names[0].rsplit("-", 1)[0]

    def method(self) -> str:
        """pycocoevalcap's name accessor."""
        return self.name

    def compute_score(self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]):
        """Scores ``res`` against ``gts``, both ``{image_id: [caption, ...]}``.

        ``res`` has exactly one caption per id; every id of ``res`` must be in ``gts`` (one or
        more references each; extra ids in ``gts`` are ignored). Captions are raw strings,
        tokenized with ``self.tokenizer``.

        Returns:
            ``(corpus_score, per_image_scores)``; ``per_image_scores[k]`` belongs to the k-th id
            of ``res`` (in its order). BLEU returns lists (one entry per n), like pycocoevalcap.

        Raises:
            MetricInputError: see :func:`keras_captioning.metrics._validation.validate_inputs`.
        """
        image_ids, references, hypotheses = validate_inputs(gts, res)
        refs, hyps = tokenize_inputs(image_ids, references, hypotheses, self.tokenizer)
        return self.score_tokenized(refs, hyps)

    def score_tokenized(self, references: list[list[list[str]]], hypotheses: list[list[str]]):
        """Scores tokenized captions: ``references[i]`` is a list of token lists for image i,
        ``hypotheses[i]`` a token list. Returns ``(corpus_score, per_image_scores)``."""
        raise NotImplementedError

    def score_corpus_tokenized(self, references: list[list[list[str]]], hypotheses: list[list[str]]):
        """The corpus score alone (as :meth:`score_tokenized`'s first value); subclasses whose
        per-image scores cost extra work (BLEU, METEOR-1.5) skip that work here."""
        return self.score_tokenized(references, hypotheses)[0]

    def prepare(self) -> None:
        """Called by ``score_all``/``compute_all`` before tokenizing: a chance to start slow
        external resources (the METEOR-1.5 JVM) in the background. Default: nothing."""

    def release(self) -> None:
        """Frees whatever :meth:`prepare` started and scoring did not use. Default: nothing."""

    def corpus_columns(self, corpus_score: Any) -> dict[str, float]:
        """``corpus_score`` as ``{name: value}`` (the first half of :meth:`columns`)."""
        if len(self.names) == 1:
            return {self.names[0]: float(corpus_score)}
        return {name: float(v) for name, v in zip(self.names, corpus_score)}

    def columns(self, corpus_score: Any, per_image_scores: Any) -> tuple[dict[str, float], list[dict[str, float]]]:
        """``(corpus, per_image)`` as ``({name: value}, [{name: value} per image])``."""
        if len(self.names) == 1:
            name = self.names[0]
            return {name: float(corpus_score)}, [{name: float(s)} for s in per_image_scores]
        corpus = {name: float(v) for name, v in zip(self.names, corpus_score)}
        per_image = [
            {name: float(column[i]) for name, column in zip(self.names, per_image_scores)}
            for i in range(len(per_image_scores[0]))
        ]
        return corpus, per_image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(names={self.names})"
