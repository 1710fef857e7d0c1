"""All metrics at once: ``score_all`` (corpus) and ``per_image_all`` (one row per image).

Captions are validated once and tokenized once (one tokenizer for every metric), then each
metric scores the same tokens. Column names:

=============  ==========================================================================
"BLEU-1".."4"  cumulative corpus BLEU, NLTK, all references (:mod:`.bleu`)
"METEOR"       NLTK's METEOR, WordNet synonyms, mean over images (:mod:`.meteor`)
"METEOR-1.5"   the official METEOR 1.5 jar of the COCO scorer; needs Java (:mod:`.official_meteor`)
"GLEU-1-4"     NLTK corpus GLEU, n-grams 1..4 (:mod:`.gleu`)
"GLEU-1-2"     NLTK corpus GLEU, n-grams 1..2
"WER"          word error rate, min over references per image, lower is better (:mod:`.wer`)
"CIDEr-D"      CIDEr-D as pycocoevalcap's ``Cider`` (:mod:`.cider_d`)
"ROUGE-L"      ROUGE-L as pycocoevalcap's ``Rouge`` (:mod:`.rouge_l`)
=============  ==========================================================================

Names also match case-insensitively with ``_`` for ``-`` (``"rouge_l"``, ``"cider-d"``,
``"meteor"`` = NLTK's "METEOR"), and the family names ``"bleu"`` (BLEU-1..4), ``"gleu"`` (both
GLEU columns), ``"cider"`` and ``"rouge"`` expand; results always use the canonical names.

``metrics=None`` means :data:`DEFAULT_METRICS`: every column except "METEOR-1.5", which starts
a JVM (about 8 s) and is therefore opt-in (``metrics=ALL_METRICS`` or name it).
"""

from collections.abc import Callable, Hashable, Mapping, Sequence

from keras_captioning.metrics._validation import tokenize_inputs, validate_inputs
from keras_captioning.metrics.bleu import Bleu
from keras_captioning.metrics.cider_d import CiderD
from keras_captioning.metrics.errors import MetricInputError
from keras_captioning.metrics.gleu import Gleu
from keras_captioning.metrics.meteor import Meteor
from keras_captioning.metrics.metric import Metric
from keras_captioning.metrics.official_meteor import OfficialMeteor
from keras_captioning.metrics.rouge_l import RougeL
from keras_captioning.metrics.tokenizer import TokenizerSpec, get_tokenizer
from keras_captioning.metrics.wer import Wer

#: Every column name, in report order.
ALL_METRICS = (
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "METEOR-1.5",
    "GLEU-1-4", "GLEU-1-2", "WER", "CIDEr-D", "ROUGE-L",
)
#: ``metrics=None``: all but the Java-backed "METEOR-1.5".
DEFAULT_METRICS = tuple(name for name in ALL_METRICS if name != "METEOR-1.5")

# Column name -> (key of the metric computing it, factory). BLEU-1..4 come from one Bleu.
_FACTORIES: dict[str, tuple[str, Callable[[], Metric]]] = {
    **{f"BLEU-{n}": ("BLEU", lambda: Bleu(n=4)) for n in range(1, 5)},
    "METEOR": ("METEOR", Meteor),
    "METEOR-1.5": ("METEOR-1.5", OfficialMeteor),
    "GLEU-1-4": ("GLEU-1-4", lambda: Gleu(1, 4)),
    "GLEU-1-2": ("GLEU-1-2", lambda: Gleu(1, 2)),
    "WER": ("WER", Wer),
    "CIDEr-D": ("CIDEr-D", CiderD),
    "ROUGE-L": ("ROUGE-L", RougeL),
}

# Family names that expand to several columns (or to the one column of a family).
_FAMILIES = {
    "BLEU": ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"),
    "GLEU": ("GLEU-1-4", "GLEU-1-2"),
    "CIDER": ("CIDEr-D",),
    "ROUGE": ("ROUGE-L",),
}

MetricSpec = str | Metric


def _columns_for(spec: str) -> tuple[str, ...]:
    """Column names for a name: exact, case-insensitive ("_" = "-"), or a family name."""
    if spec in _FACTORIES:
        return (spec,)
    key = spec.strip().upper().replace("_", "-")
    for name in ALL_METRICS:
        if name.upper() == key:
            return (name,)
    if key in _FAMILIES:
        return _FAMILIES[key]
    raise MetricInputError(
        f"metrics: unknown name {spec!r}; known: {', '.join(ALL_METRICS)} (or bleu, gleu, cider, rouge)"
    )


def _plan(metrics: Sequence[MetricSpec] | None) -> tuple[list[str], list[Metric]]:
    """(requested column names in order, metric instances to run once each)."""
    specs = DEFAULT_METRICS if metrics is None else metrics
    if isinstance(specs, (str, Metric)):
        specs = [specs]
    if not specs:
        raise MetricInputError("metrics: is empty; name at least one of " + ", ".join(ALL_METRICS))
    columns: list[str] = []
    instances: dict[str, Metric] = {}
    for spec in specs:
        if isinstance(spec, Metric):
            instances[f"instance-{id(spec)}"] = spec
            columns.extend(name for name in spec.names if name not in columns)
            continue
        if not isinstance(spec, str):
            raise MetricInputError(f"metrics: expected names or Metric instances, got {type(spec).__name__}")
        for name in _columns_for(spec):
            key, factory = _FACTORIES[name]
            if key not in instances:
                instances[key] = factory()
            if name not in columns:
                columns.append(name)
    return columns, list(instances.values())


def compute_all(
    gts: Mapping[Hashable, Sequence[str]],
    res: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[MetricSpec] | None = None,
    tokenizer: TokenizerSpec = "ptb",
) -> tuple[dict[str, float], dict[Hashable, dict[str, float]]]:
    """Corpus and per-image scores in one pass: ``(score_all(...), per_image_all(...))``.

    Args:
        gts: ``{image_id: [reference, ...]}``.
        res: ``{image_id: [hypothesis]}`` (exactly one caption each; ids must be in ``gts``).
        metrics: column names (see module docstring) and/or :class:`Metric` instances (their
            own settings, e.g. ``Bleu(smoothing=None)``); default :data:`DEFAULT_METRICS`.
        tokenizer: applied to every caption once, for every metric (each metric's own
            tokenizer setting is not used here).

    Raises:
        MetricInputError: bad ``gts``/``res``/``metrics``/``tokenizer``.
        WordNetNotFoundError: "METEOR" requested but no WordNet is installed.
    """
    return _score(gts, res, metrics, tokenizer, per_image=True)


def _score(gts, res, metrics, tokenizer, per_image: bool):
    """Corpus scores, and per-image rows when ``per_image`` (else ``None``; no per-image work)."""
    columns, instances = _plan(metrics)
    tokenize = get_tokenizer(tokenizer)
    image_ids, references, hypotheses = validate_inputs(gts, res)
    # Metrics with a slow external start (the METEOR-1.5 JVM) start it now, so that it loads
    # while the others tokenize and score; they run last.
    instances.sort(key=lambda metric: type(metric).prepare is not Metric.prepare)
    try:
        for metric in instances:
            metric.prepare()
        refs, hyps = tokenize_inputs(image_ids, references, hypotheses, tokenize)
        corpus: dict[str, float] = {}
        rows: list[dict[str, float]] = [{} for _ in image_ids] if per_image else []
        for metric in instances:
            if not per_image:
                corpus.update(metric.corpus_columns(metric.score_corpus_tokenized(refs, hyps)))
                continue
            metric_corpus, metric_rows = metric.columns(*metric.score_tokenized(refs, hyps))
            corpus.update(metric_corpus)
            for row, metric_row in zip(rows, metric_rows):
                row.update(metric_row)
    finally:
        for metric in instances:
            metric.release()
    ordered = {name: corpus[name] for name in columns}
    if not per_image:
        return ordered, None
    return ordered, {i: {name: row[name] for name in columns} for i, row in zip(image_ids, rows)}


def score_all(
    gts: Mapping[Hashable, Sequence[str]],
    res: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[MetricSpec] | None = None,
    tokenizer: TokenizerSpec = "ptb",
) -> dict[str, float]:
    """Corpus scores ``{column name: value}`` in the requested order (see :func:`compute_all`).

    Only corpus work is done: no per-image BLEU, no per-image METEOR-1.5 answers (same values
    as ``compute_all(...)[0]``).
    """
    return _score(gts, res, metrics, tokenizer, per_image=False)[0]


def per_image_all(
    gts: Mapping[Hashable, Sequence[str]],
    res: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[MetricSpec] | None = None,
    tokenizer: TokenizerSpec = "ptb",
) -> dict[Hashable, dict[str, float]]:
    """Per-image scores ``{image_id: {column name: value}}`` in ``res`` order.

    Per-image BLEU is smoothed sentence BLEU (``method1``), per-image CIDEr-D still uses the
    document frequencies of the whole scored set (see :func:`compute_all`).
    """
    return compute_all(gts, res, metrics=metrics, tokenizer=tokenizer)[1]
