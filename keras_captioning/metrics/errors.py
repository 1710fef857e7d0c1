"""The two user-facing errors of the metrics package (both are ``CaptioningError``)."""

from keras_captioning.errors import CaptioningError


class MetricInputError(CaptioningError):
    """Bad metric input (empty dicts, ids of ``res`` missing from ``gts``, wrong types).

    A ``ValueError`` (as every ``CaptioningError``), so ``except ValueError`` works as it
    would with pycocoevalcap.
    """


class WordNetNotFoundError(CaptioningError):
    """WordNet (needed by NLTK's METEOR) is neither in NLTK's data nor installed system-wide."""
