"""Input checks shared by every metric: the pycocoevalcap ``{image_id: [caption, ...]}`` dicts."""

from collections.abc import Hashable, Mapping, Sequence

from keras_captioning.metrics.errors import MetricInputError
from keras_captioning.metrics.tokenizer import Tokenizer, TokenizerSpec, get_tokenizer

_MAX_IDS_SHOWN = 10


def _show_ids(ids: Sequence[Hashable]) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:_MAX_IDS_SHOWN])
    more = len(ids) - _MAX_IDS_SHOWN
    return shown + (f" (and {more} more)" if more > 0 else "")


def _as_caption_list(value, *, name: str, image_id: Hashable) -> list[str]:
    # A bare string is one caption: never iterate it character by character (the study's bug).
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, (list, tuple)):
        raise MetricInputError(
            f"{name}[{image_id!r}]: expected a list of caption strings, got {type(value).__name__}"
        )
    for caption in captions:
        if not isinstance(caption, str):
            raise MetricInputError(
                f"{name}[{image_id!r}]: captions must be strings, got {type(caption).__name__}; "
                "pass {image_id: ['a caption', ...]}"
            )
    return list(captions)


def validate_inputs(gts: Mapping, res: Mapping) -> tuple[list[Hashable], dict, dict]:
    """Checks ``gts``/``res`` and returns ``(image_ids, references, hypotheses)``.

    ``image_ids`` are the keys of ``res`` in their order (ids only in ``gts`` are ignored, so a
    full reference file can score a subset); ``references[id]`` is a non-empty list of strings
    and ``hypotheses[id]`` a single string. A bare string is accepted as a one-element list.

    Raises:
        MetricInputError: empty dicts, non-dict inputs, ids of ``res`` missing from ``gts``,
            not exactly one caption per id in ``res``, no reference for an id, non-strings.
    """
    for name, value in (("gts", gts), ("res", res)):
        if not isinstance(value, Mapping):
            raise MetricInputError(
                f"{name}: expected a dict {{image_id: [caption, ...]}}, got {type(value).__name__}"
            )
        if not value:
            raise MetricInputError(f"{name}: is empty; there is nothing to score")
    image_ids = list(res.keys())
    missing = [i for i in image_ids if i not in gts]
    if missing:
        hint = ""
        as_text = {str(k) for k in gts.keys()}
        if any(str(i) in as_text for i in missing):
            hint = " (ids are compared with their type: 123 and '123' differ)"
        raise MetricInputError(
            f"res: {len(missing)} image id(s) have no references in gts: {_show_ids(missing)}{hint}"
        )
    references = {}
    hypotheses = {}
    for image_id in image_ids:
        hyp = _as_caption_list(res[image_id], name="res", image_id=image_id)
        if len(hyp) != 1:
            raise MetricInputError(
                f"res[{image_id!r}]: expected exactly one caption, got {len(hyp)}"
            )
        refs = _as_caption_list(gts[image_id], name="gts", image_id=image_id)
        if not refs:
            raise MetricInputError(f"gts[{image_id!r}]: has no reference caption")
        hypotheses[image_id] = hyp[0]
        references[image_id] = refs
    return image_ids, references, hypotheses


def tokenize_inputs(
    image_ids: Sequence[Hashable], references: Mapping, hypotheses: Mapping, tokenizer: Tokenizer
) -> tuple[list[list[list[str]]], list[list[str]]]:
    """Tokenizes validated inputs: ``(refs[i][j] = tokens, hyps[i] = tokens)`` in id order.

    Each distinct caption string is tokenized once per call (references repeat across images
    and hypotheses often equal references); every occurrence gets its own list.
    """
    cache: dict[str, list[str]] = {}

    def tokens(text: str) -> list[str]:
        cached = cache.get(text)
        if cached is None:
            cached = cache[text] = list(tokenizer(text))
        return cached.copy()

    refs = [[tokens(r) for r in references[i]] for i in image_ids]
    hyps = [tokens(hypotheses[i]) for i in image_ids]
    return refs, hyps


def tokenize_sentence(references, hypothesis: str, tokenizer: TokenizerSpec = "ptb"):
    """One caption and its references (a string or a list of strings) -> tokens.

    Returns ``(tokenize, reference_tokens, hypothesis_tokens)``; the sentence-level helpers
    of every metric go through here, so they treat a bare string and an empty list alike.
    """
    tokenize = get_tokenizer(tokenizer)
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise MetricInputError("references: at least one reference caption is needed")
    return tokenize, [tokenize(r) for r in refs], tokenize(hypothesis)
