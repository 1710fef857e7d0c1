"""From an experiment config to feature shards: dataset -> subset/split -> vocabulary -> CNN.

This is what ``python -m keras_captioning features`` (``make features``) runs. For the
embedded synthetic dataset it first generates the images if they are not there yet.
"""

from __future__ import annotations

import logging
import os

from keras_captioning.config import ExperimentConfig
from keras_captioning.data.loaders import load_dataset
from keras_captioning.data.records import UNSPLIT, collect_skips
from keras_captioning.data.splits import select_and_split
from keras_captioning.data.synthetic import generate_synthetic
from keras_captioning.data.vocab import Vocabulary
from keras_captioning.errors import CaptioningError

log = logging.getLogger(__name__)


def load_records(cfg: ExperimentConfig, skipped: list | None = None):
    """Reads the configured dataset and applies the subset and the by-image split.

    ``skipped``, if given, receives the records the loader skipped (``collect_skips`` entries).
    """
    with collect_skips() as found:
        records = _read_dataset(cfg)
    if skipped is not None:
        skipped.extend(found)
    ratios = cfg.data.splits
    if cfg.data.format == "table" and all(r.split != UNSPLIT for r in records):
        ratios = None  # the table's split column decides
    return select_and_split(records, num_images=cfg.data.num_images, ratios=ratios, seed=cfg.data.seed)


def _read_dataset(cfg: ExperimentConfig):
    data = cfg.data
    if data.format == "synthetic":
        if not os.path.exists(os.path.join(data.root, "captions.json")):
            log.info("generating the synthetic dataset (%d images) in %s", data.synthetic_images, data.root)
            generate_synthetic(data.root, num_images=data.synthetic_images, seed=data.seed,
                               image_size=data.synthetic_image_size)
        records = load_dataset("synthetic", root=data.root)
    else:
        if not data.captions:
            raise CaptioningError(f"data.captions: required for data.format={data.format}")
        images = data.images or os.path.dirname(data.captions)
        table = {} if data.format != "table" else {
            "image_column": data.image_column, "caption_column": data.caption_column,
            "split_column": data.split_column, "delimiter": data.delimiter}
        records = load_dataset(data.format, captions=data.captions, images=images, **table)
    if not records:
        raise CaptioningError(f"{data.captions or data.root}: no usable images with captions")
    return records


def build_features(cfg: ExperimentConfig, overwrite: bool = False, num_workers: int = 1,
                   worker_index: int = 0) -> dict:
    """Writes the shards, ``vocab.json`` and ``manifest.json`` for ``cfg``; returns the manifest.

    What happens to an existing folder is ``FeatureFolder.decide``'s call: reuse it when its
    fingerprint matches ``cfg``, extract (again) when it is missing, damaged or the config's
    own stale folder, and stop with one line naming the differing settings when it is a
    stale folder given explicitly (``overwrite`` replaces it anyway).
    """
    from keras_captioning.features.extract import extract_features  # TensorFlow from here on
    from keras_captioning.features.feature_folder import FeatureFolder
    from keras_captioning.features.fingerprint import FINGERPRINT_KEY, feature_fingerprint

    out_dir = cfg.features_dir
    folder = FeatureFolder(out_dir)
    decision, changed = folder.decide(cfg)
    if not overwrite and num_workers == 1 and decision == "reuse":
        log.info("features already complete in %s (use --overwrite to redo them)", out_dir)
        return folder.manifest()
    if changed and not overwrite:
        if decision == "refuse":
            raise CaptioningError(folder.stale_message(changed))
        log.warning("%s: features are stale (%s); extracting them again", out_dir, "; ".join(changed))
        overwrite = True
    fingerprint = feature_fingerprint(cfg)
    dataset_skipped: list = []
    records = load_records(cfg, dataset_skipped)
    train_captions = [c for r in records if r.split == "train" for c in r.captions]
    if not train_captions:
        raise CaptioningError("data.splits: the training split is empty; give it a non-zero ratio")
    vocab = Vocabulary.build(train_captions, max_words=cfg.data.vocab_size)
    log.info("vocabulary: %d tokens from %d training captions", len(vocab), len(train_captions))
    return extract_features(
        records, vocab, out_dir,
        backbone=cfg.features.backbone, weights=cfg.features.weights,
        image_size=cfg.features.image_size, alpha=cfg.features.alpha,
        batch_size=cfg.features.batch_size, shard_size=cfg.features.shard_size,
        dtype=cfg.features.dtype, num_workers=num_workers, worker_index=worker_index,
        overwrite=overwrite, max_length=cfg.data.max_length, dataset_skipped=dataset_skipped,
        extra_manifest={"experiment": cfg.name, FINGERPRINT_KEY: fingerprint, "data": {
            "format": cfg.data.format, "root": cfg.data.root, "captions": cfg.data.captions,
            "num_images": cfg.data.num_images, "splits": cfg.data.splits, "seed": cfg.data.seed,
            "vocab_size": cfg.data.vocab_size}},
    )
