"""Caption any image with a trained run: ``Captioner.from_run(run_dir).caption(images)``.

The captioner rebuilds exactly the encoder the run's features came from (backbone, image
size, weights — for random weights, the copy saved beside the shards), reads and resizes
images the way extraction did, and decodes with the run's vocabulary through the decoders.
"""

from __future__ import annotations

import json
import os

import numpy as np

from keras_captioning.errors import CaptioningError


class Captioner:
    """A trained captioner bundled with its image encoder and vocabulary.

    Args:
        model: a trained ``MergeCaptioner`` or ``AttentionCaptioner``.
        backbone: the ``build_backbone`` model: (B, S, S, 3) in [0, 255] -> {"grid", "pooled"}.
        vocab: the run's ``Vocabulary``.
        image_size: S.
        feature: "grid" (attention model) or "pooled" (merge model).
        max_length: default number of decoding steps.
    """

    def __init__(self, model, backbone, vocab, image_size: int, feature: str, max_length: int = 20):
        self.model = model
        self.backbone = backbone
        self.vocab = vocab
        self.image_size = int(image_size)
        self.feature = feature
        self.max_length = int(max_length)

    @classmethod
    def from_run(cls, run_dir: str, checkpoint: str = "best", weights: str | None = None) -> Captioner:
        """Loads a run directory written by ``python -m keras_captioning train``.

        ``weights`` overrides where the backbone's weights come from (e.g. a local ImageNet
        file when the run recorded "imagenet" and this machine is offline).
        """
        from keras_captioning.data.vocab import Vocabulary
        from keras_captioning.evaluate import load_model
        from keras_captioning.features.backbones import build_backbone
        from keras_captioning.features.extract import RANDOM_BACKBONE_FILE
        from keras_captioning.training.trainer import check_run_dir, load_run_config

        info = check_run_dir(run_dir)
        cfg = load_run_config(run_dir)
        with open(os.path.join(run_dir, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
        vocab = Vocabulary.load(os.path.join(run_dir, "vocab.json"))
        size = int(manifest["image_size"])
        recorded = manifest.get("weights", cfg.features.weights)
        random_file = os.path.join(info["features_dir"], RANDOM_BACKBONE_FILE)
        if weights is None:
            if recorded in ("none", None):
                weights = "none"
            elif recorded == "imagenet":
                weights = "imagenet"
            else:
                weights = manifest.get("weights_path") or cfg.features.weights
        backbone = build_backbone(manifest["backbone"], weights=weights, image_size=size,
                                  alpha=manifest.get("alpha"))
        if weights == "none" and backbone.weights:
            if not os.path.exists(random_file):
                raise CaptioningError(
                    f"{random_file}: the run's features used a randomly initialised "
                    f"{manifest['backbone']} whose weights were not kept; captions of new images "
                    "would use different random features. Re-extract the features, or use a "
                    "pretrained or 'patches' backbone"
                )
            backbone.load_weights(random_file)
        model = load_model(run_dir, checkpoint)
        return cls(model, backbone, vocab, size, "pooled" if cfg.model.type == "merge" else "grid",
                   max_length=cfg.eval.max_length)

    def load_images(self, images) -> tuple:
        """Paths or (H, W, 3) arrays -> (float32 (B, S, S, 3) in [0, 255], display uint8 list)."""
        import tensorflow as tf

        from keras_captioning.features.extract import check_image, load_image_pil

        batch, shown = [], []
        for item in images:
            if isinstance(item, (str, os.PathLike)):
                path = os.fspath(item)
                check = check_image(path)
                if not check.ok:
                    raise CaptioningError(f"{path}: {check.reason}")
                array = load_image_pil(path, max_side=max(2 * self.image_size, 512))
            else:
                array = np.asarray(item)
                if array.ndim == 2:
                    array = np.repeat(array[..., None], 3, axis=-1)
                if array.ndim != 3 or array.shape[-1] not in (3, 4):
                    raise CaptioningError(f"image array: expected (H, W, 3), got shape {array.shape}")
                array = array[..., :3]
                if array.dtype != np.uint8:
                    array = np.clip(array, 0, 255).astype(np.uint8)
            shown.append(array)
            batch.append(tf.image.resize(tf.convert_to_tensor(array), (self.image_size, self.image_size)))
        return tf.stack(batch), shown

    def encode(self, pixels):
        """(B, S, S, 3) pixels -> the model's features: (B, R, D) grid or (B, D) pooled."""
        out = self.backbone(pixels, training=False)
        return out[self.feature]

    def caption(self, images, beam: int = 3, max_length: int | None = None,
                length_penalty: float = 0.0, batch_size: int = 32) -> list:
        """Captions ``images`` (paths or arrays); one dict per image.

        Each dict has ``caption`` (str), ``words``, ``tokens``, ``attention`` ((words, R): the
        weights used to produce each word, or None for the merge model) and
        ``image`` (the uint8 array, for drawing).
        """
        from keras_captioning.evaluate import decode_features

        images = list(images)
        if not images:
            return []
        steps = max_length or self.max_length
        results = []
        for start in range(0, len(images), batch_size):
            pixels, shown = self.load_images(images[start: start + batch_size])
            tokens, attention = decode_features(self.model, self.encode(pixels), beam, steps, length_penalty)
            for i, array in enumerate(shown):
                ids = [int(t) for t in tokens[i] if int(t) != self.vocab.pad_id]
                caption = self.vocab.decode(ids)
                results.append({
                    "caption": caption, "words": caption.split(), "tokens": ids, "image": array,
                    "attention": None if attention is None else np.asarray(attention[i])[: len(ids)],
                })
        return results

    def draw_attention(self, results: list, out_path: str) -> list:
        """Draws one attention figure per result; several images get ``OUT-<i>.png`` names."""
        from keras_captioning.viz import plot_attention

        paths = []
        stem, ext = os.path.splitext(out_path)
        for i, res in enumerate(results):
            if res.get("attention") is None:
                raise CaptioningError("attention maps need an attention model (this run is a merge model)")
            path = out_path if len(results) == 1 else f"{stem}-{i}{ext or '.png'}"
            plot_attention(res["image"], res["words"], res["attention"], path,
                           title=res["caption"])
            paths.append(path)
        return paths
