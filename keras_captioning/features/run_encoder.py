"""The CNN a run's features came from, rebuilt from what the run folder holds (``manifest.json``,
``encoder.weights.h5``): ``Captioner.from_run`` and the fine-tuning stage start from it."""

from __future__ import annotations

import os

from keras_captioning.errors import CaptioningError


def rebuild_encoder(run, info: dict, manifest: dict, weights: str | None):
    """The backbone the run's features came from, from what the run folder itself holds.

    Pretrained weights by name ("imagenet"); a local weights file by its recorded path, checked
    against its recorded sha256; random weights from the run's ``encoder.weights.h5`` (older
    runs: the copy beside the shards), else rebuilt from the seed extraction used.
    """
    import keras

    from keras_captioning.features.backbones import build_backbone
    from keras_captioning.features.manifests import RANDOM_BACKBONE_FILE, RANDOM_BACKBONE_SEED
    from keras_captioning.utils import sha256_file

    name, size, alpha = manifest["backbone"], int(manifest["image_size"]), manifest.get("alpha")
    recorded = manifest.get("weights")
    if weights is None:
        weights = recorded if recorded in ("none", "imagenet", None) else manifest.get("weights_path") or recorded
        weights = "none" if weights is None else weights
        expected = manifest.get("weights_sha256")
        if expected and weights not in ("none", "imagenet"):
            if not os.path.isfile(weights):
                raise CaptioningError(f"{weights}: the encoder's weights file (sha256 {expected[:12]}...) is not on "
                                      "this machine; pass its path (Captioner.from_run(..., weights=PATH))")
            if sha256_file(weights) != expected:
                raise CaptioningError(f"{weights}: not the weights file the run's features were made with "
                                      f"(sha256 {expected[:12]}...)")
    if weights != "none":
        return build_backbone(name, weights=weights, image_size=size, alpha=alpha)
    saved = [p for p in (run.encoder_weights, os.path.join(info.get("features_dir", ""), RANDOM_BACKBONE_FILE))
             if os.path.isfile(p)]
    if not saved:  # rebuilt from the seed extraction used (this reseeds the global generators)
        keras.utils.set_random_seed(RANDOM_BACKBONE_SEED)
    backbone = build_backbone(name, weights=None, image_size=size, alpha=alpha)
    if backbone.weights and saved:
        backbone.load_weights(saved[0])
    return backbone
