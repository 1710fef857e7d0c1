"""Decoding a split's cached features with a run's model, or with several runs as one
(``CaptionEnsemble``): what ``evaluate`` scores."""

from __future__ import annotations

import logging
import os

import numpy as np

from keras_captioning.errors import CaptioningError
from keras_captioning.run_directory import RunDirectory

log = logging.getLogger(__name__)


def load_model(run_dir: str, checkpoint: str = "best"):
    from keras_captioning.training.callbacks import read_checkpoint

    run = RunDirectory(run_dir)
    path = run.checkpoint(checkpoint)
    if not os.path.exists(path):
        fallback = run.checkpoint(run.LAST)
        if not os.path.exists(fallback):
            raise CaptioningError(f"{run_dir}: no checkpoint in checkpoints/; train the run first")
        path = fallback
    return read_checkpoint(path, compile=False)  # a damaged file is an error naming it


def _aligned_batches(features_dirs: list, feature_kinds: list, split: str, batch_size: int):
    """Eval batches of ``split`` read side by side from each features folder: one list of batches
    (one per folder) at a time. A read error names the shard; the folders must list the same
    photos in the same order."""
    from keras_captioning.data.pipeline import make_eval_dataset
    from keras_captioning.features.feature_folder import FeatureFolder

    folders = [FeatureFolder(d) for d in features_dirs]
    for folder, d in zip(folders, features_dirs):
        if not folder.shard_files(split):
            raise CaptioningError(f"{d}: no shards for split '{split}' ({folder.shard_pattern(split)})")
    datasets = [iter(make_eval_dataset(f.shard_pattern(split), batch_size, feature=k))
                for f, k in zip(folders, feature_kinds)]
    while True:
        try:
            batches = [next(it, None) for it in datasets]
        except Exception as err:
            from keras_captioning.data.shards import shard_read_error

            files = [path for folder in folders for path in folder.shard_files(split)]
            named = shard_read_error(err, files, "extract the features again (features --overwrite)")
            if named is err:
                raise
            raise named from None
        if all(b is None for b in batches):
            return
        if any(b is None for b in batches) or any(
                not np.array_equal(b["image_id"].numpy(), batches[0]["image_id"].numpy()) for b in batches[1:]):
            raise CaptioningError(f"ensemble: the feature folders {', '.join(features_dirs)} do not list the same "
                                  f"images of split '{split}' in the same order (features of one dataset, "
                                  "extracted from the same captions file)")
        yield batches


def decode_split(model, vocab, features_dir: str, split: str, feature: str, beam: int,
                 max_length: int, batch_size: int = 64, length_penalty: float = 0.0) -> list:
    """Decodes every image of ``split``; returns one dict per image."""
    out = []
    for (batch,) in _aligned_batches([features_dir], [feature], split, batch_size):
        out.extend(_decode_batch(model, vocab, batch, beam, max_length, length_penalty))
        log.info("decoded %d images of %s", len(out), split)
    return out


def _decode_batch(model, vocab, batch, beam: int, max_length: int, length_penalty: float) -> list:
    """One dict per image of an eval batch: id, tokens, caption, references, attention."""
    from keras_captioning.decoding import decode_best, decode_captions

    out = []
    result = decode_best(model, batch["features"], max_length, beam, length_penalty)
    ids = [x.decode("utf-8") for x in batch["image_id"].numpy()]
    refs = batch["references"].numpy()
    for i, (image_id, row, caption) in enumerate(zip(ids, result.token_lists(), decode_captions(result, vocab))):
        out.append({
            "image_id": image_id,
            "tokens": row,
            "caption": caption,
            "references": [r.decode("utf-8") for r in refs[i] if r],
            "attention": None if result.attention is None else result.attention[i][: len(row)],
        })
    return out


def scored_model(run_dir: str, split: str, checkpoint: str):
    """``(model, features_dir, feature kind)`` a run's ``split`` is decoded with; the shards are
    checked against their manifest first. A fine-tuned run's own CNN makes the features."""
    from keras_captioning.data.shards import damaged_shards, read_manifest
    from keras_captioning.models.registry import model_type

    run = RunDirectory(run_dir)
    info, cfg = run.info(), run.config()
    features_dir, model = info["features_dir"], None
    if info.get("objective") == "finetune":
        from keras_captioning.features.fine_tuned import fine_tuned_features

        model = load_model(run_dir, checkpoint)
        features_dir = fine_tuned_features(run, model, cfg, split, checkpoint)
        model = model.captioner
    # The shards are still there and match their manifest (size, checksum), before decoding anything.
    damaged = damaged_shards(features_dir, read_manifest(features_dir), splits=[split])
    if damaged:
        raise CaptioningError(f"{damaged[0][0]}: {damaged[0][1]} ({len(damaged)} damaged shard(s) of split "
                              f"'{split}'); run the features step again to redo them")
    return model or load_model(run_dir, checkpoint), features_dir, model_type(cfg.model.type).feature


def check_ensemble(run_dir: str, others: list, vocab) -> list:
    """The ensemble's other runs, checked: run folders, not the main run, the same vocabulary."""
    seen = {os.path.realpath(run_dir)}
    for other in others:
        if os.path.realpath(other) in seen:
            raise CaptioningError(f"--ensemble {other}: the run is already in the ensemble")
        seen.add(os.path.realpath(other))
        member = RunDirectory(other)
        member.info()  # a folder that is not a run is one line
        if member.vocab() != vocab:
            raise CaptioningError(f"--ensemble {other}: its vocabulary differs from {run_dir}'s; an ensemble's "
                                  "models must share one (the same captions and data.vocab_size)")
    return list(others)


def decode_split_ensemble(members: list, names: list, vocab, features_dirs: list, feature_kinds: list,
                          split: str, beam: int, max_length: int, batch_size: int = 64,
                          length_penalty: float = 0.0) -> list:
    """``decode_split`` for several models at once (:class:`CaptionEnsemble`): each reads its own
    features of the same images, which every feature folder must list in the same order."""
    from keras_captioning.models.caption_ensemble import CaptionEnsemble

    ensemble, out = None, []
    for batches in _aligned_batches(features_dirs, feature_kinds, split, batch_size):
        arrays = [b["features"].numpy() for b in batches]
        if ensemble is None:
            ensemble = CaptionEnsemble(members, [a.shape[1:] for a in arrays], names)
        packed = {**batches[0], "features": ensemble.pack(arrays)}
        out.extend(_decode_batch(ensemble, vocab, packed, beam, max_length, length_penalty))
        log.info("decoded %d images of %s (ensemble of %d)", len(out), split, len(members))
    return out
