"""The value returned by every decoder."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class DecodeResult:
    """Decoded captions for a batch of images (numpy arrays).

    Attributes:
        tokens: int32 (B, L), or (B, N, L) for beam search with ``num_return > 1``:
            generated word ids without START and without END, 0-padded after the
            last word. L is the decoder's ``max_length``.
        scores: float32 (B,) or (B, N): total log-probability of the sequence
            under the model, including the END token when one was produced
            (PAD and START are excluded from the softmax, see decoding/__init__).
        lengths: int32 (B,) or (B, N): number of words (END not counted).
        attention: float32 (B, L, R) or (B, N, L, R): the attention map used to
            produce each word (rows past ``lengths`` are 0), or None for models
            without attention.
    """

    tokens: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray
    attention: np.ndarray | None = None

    def best(self) -> "DecodeResult":
        """The top hypothesis per image: (B, L) shapes whatever the decoder returned."""
        if self.tokens.ndim == 2:
            return self
        return DecodeResult(
            tokens=self.tokens[:, 0],
            scores=self.scores[:, 0],
            lengths=self.lengths[:, 0],
            attention=None if self.attention is None else self.attention[:, 0],
        )

    def token_lists(self) -> list[list[int]]:
        """The best hypothesis of each image as a list of word ids (no padding)."""
        best = self.best()
        return [row[:n].tolist() for row, n in zip(best.tokens, best.lengths)]


def decode_captions(result: DecodeResult, vocab) -> list[str]:
    """Token ids -> text, the one place: each image's best hypothesis through ``vocab.decode``
    (any object with ``decode(ids) -> str``, e.g. ``data.vocab.Vocabulary``)."""
    return [vocab.decode(ids) for ids in result.token_lists()]
