"""A features folder as an object: the one owner of its file names and of "is it current?".

    <folder>/<split>-00000-of-000NN.tfrecord   shards (``SHARD_NAME``; globbed by ``shard_pattern``)
    <folder>/vocab.json                        the vocabulary the caption ids use
    <folder>/manifest.json                     the finished manifest (``features/manifests.py``)
    <folder>/backbone.weights.h5               a random backbone's weights (``weights=None``)

Every reader (training, evaluation, benchmarks, examples, tests) asks this class for shard
globs and file paths instead of spelling them. ``decide(cfg)`` is the one comparison of the
folder's fingerprint (``features.fingerprint.feature_fingerprint``) with a config, and
``stale_message`` the one message for a folder made with other settings.
"""

from __future__ import annotations

import logging
import os

from keras_captioning.errors import CaptioningError
from keras_captioning.features.fingerprint import (
    FINGERPRINT_KEY,
    differences,
    feature_fingerprint,
    is_own_folder,
)

log = logging.getLogger(__name__)


class FeatureFolder:
    """Paths, manifest and currency of one features folder (see the module docstring)."""

    SHARD_NAME = "{split}-{index:05d}-of-{count:05d}.tfrecord"
    SHARD_SUFFIX = ".tfrecord"
    VOCAB = "vocab.json"
    MANIFEST = "manifest.json"
    RANDOM_BACKBONE = "backbone.weights.h5"

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"FeatureFolder({self.path!r})"

    # ------------------------------------------------------------------ names
    @classmethod
    def shard_name(cls, split: str, index: int, count: int) -> str:
        return cls.SHARD_NAME.format(split=split, index=index, count=count)

    @classmethod
    def is_shard_name(cls, name: str) -> bool:
        return name.endswith(cls.SHARD_SUFFIX)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def shard_pattern(self, split: str = "*") -> str:
        """The glob of ``split``'s shards (``"*"``: every split)."""
        return self.file(f"{split}-*-of-*{self.SHARD_SUFFIX}")

    def shard_files(self, split: str = "*") -> list[str]:
        """Sorted paths of ``split``'s finished shards (never temporary files); may be empty."""
        import glob

        return sorted(p for p in glob.glob(glob.escape(self.path) + os.sep + f"{split}-*-of-*{self.SHARD_SUFFIX}")
                      if ".tmp-" not in os.path.basename(p))

    @property
    def vocab_path(self) -> str:
        return self.file(self.VOCAB)

    @property
    def manifest_path(self) -> str:
        return self.file(self.MANIFEST)

    @property
    def random_backbone_path(self) -> str:
        return self.file(self.RANDOM_BACKBONE)

    # ------------------------------------------------------------------ reading
    def manifest(self) -> dict:
        from keras_captioning.data.shards import read_manifest

        return read_manifest(self.path)

    def vocab(self):
        from keras_captioning.data.vocab import Vocabulary

        return Vocabulary.load(self.vocab_path)

    def is_complete(self) -> bool:
        """True when a finished manifest is there and every shard matches its size and checksum.

        A manifest that is there but unusable (corrupt, an older shard format) is an error
        saying to rerun with --overwrite, rather than shards the readers would choke on.
        """
        from keras_captioning.data.shards import damaged_shards

        if not os.path.exists(self.manifest_path):
            return False
        damaged = damaged_shards(self.path, self.manifest())
        for path, problem in damaged:
            log.warning("%s: %s; it will be extracted again", path, problem)
        return not damaged

    def decide(self, cfg) -> tuple[str, list[str]]:
        """``("reuse" | "extract" | "refuse", differing settings)`` of this folder for ``cfg``.

        reuse: a finished manifest with ``cfg``'s fingerprint and every shard intact; extract:
        none, damaged shards, or a stale folder that is the config's own (``features/<name>``);
        refuse: a stale folder given explicitly. A manifest without a fingerprint is stale.
        """
        if not os.path.exists(self.manifest_path):
            return "extract", []
        try:
            manifest = self.manifest()
        except CaptioningError:  # an older shard format or a corrupt manifest: stale
            manifest = {}
        changed = differences(manifest.get(FINGERPRINT_KEY), feature_fingerprint(cfg))
        if not changed:
            return ("reuse" if self.is_complete() else "extract"), []
        return ("extract" if is_own_folder(cfg) else "refuse"), changed

    def stale_message(self, changed: list[str]) -> str:
        """The one-line error for a folder made with other settings."""
        return (f"{self.path}: features were made with other settings ({'; '.join(changed) or 'unknown'}); "
                "run `features --overwrite` to replace them, or set features.out_dir to a new folder")

    def check_vocab(self, manifest: dict, vocab) -> None:
        """Stops when ``vocab`` does not give the token ids stored in the shards."""
        expected = manifest.get("vocab_fingerprint")
        if expected and expected != vocab.fingerprint():
            raise CaptioningError(
                f"{self.vocab_path}: does not match the token ids in the shards (fingerprint "
                f"{vocab.fingerprint()[:12]} vs manifest {expected[:12]}); rerun features with --overwrite")
