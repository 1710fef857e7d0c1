"""Caption any image with a trained run: ``Captioner.from_run(run_dir).caption(images)``.

The captioner rebuilds exactly the encoder the run's features came from (backbone, image
size, weights — for random weights, the copy saved beside the shards), decodes and resizes
images with extraction's own decoder (``features/images.py``, so the exported SavedModel
and this class see the same pixels), and decodes with the run's vocabulary through the
decoders. ``save(dir)`` / ``load(dir)`` move it to another machine (``bundle.py``).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from keras_captioning.errors import CaptioningError
from keras_captioning.utils import Progress

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 5.0  # interval of the "caption: n/N images" log line


class Captioner:
    """A trained captioner bundled with its image encoder, vocabulary and decoding defaults.

    Args:
        model: a trained ``MergeCaptioner`` or ``AttentionCaptioner``.
        backbone: the ``build_backbone`` model: (B, S, S, 3) in [0, 255] -> {"grid", "pooled"}.
        vocab: the run's ``Vocabulary``.
        image_size: S.
        feature: "grid" (attention model) or "pooled" (merge model).
        max_length: default number of decoding steps.
        beam: default beam width (1 = greedy).
        length_penalty: default GNMT alpha of beam search.
        backbone_name, alpha: the backbone's registry name and width multiplier (for ``save``).
        info: where it came from and the run's scores (``{"source", "scores"}``), for ``save``.
    """

    def __init__(self, model, backbone, vocab, image_size: int, feature: str, max_length: int = 20,
                 beam: int = 3, length_penalty: float = 0.0, backbone_name: str | None = None,
                 alpha: float | None = None, info: dict | None = None):
        self.model = model
        self.backbone = backbone
        self.vocab = vocab
        self.image_size = int(image_size)
        self.feature = feature
        self.max_length = int(max_length)
        self.beam = int(beam)
        self.length_penalty = float(length_penalty)
        self.backbone_name = backbone_name
        self.alpha = alpha
        self.info = info or {}

    @property
    def has_attention(self) -> bool:
        from keras_captioning.models.registry import model_type_of

        return model_type_of(self.model).has_attention

    @classmethod
    def from_run(cls, run_dir: str, checkpoint: str = "best", weights: str | None = None) -> Captioner:
        """Loads a run directory written by ``python -m keras_captioning train``.

        ``weights`` overrides where the backbone's weights come from (e.g. a local ImageNet
        file when the run recorded "imagenet" and this machine is offline).
        """
        from keras_captioning.models.registry import model_type
        from keras_captioning.run_directory import RunDirectory
        from keras_captioning.split_decoding import load_model

        run = RunDirectory(run_dir)
        info = run.info()
        cfg = run.config()
        manifest = run.manifest()
        vocab = run.vocab()
        size = int(manifest["image_size"])
        model = load_model(run_dir, checkpoint)
        if info.get("objective") == "finetune":  # the checkpoint holds its fine-tuned CNN: never the ImageNet one
            backbone, model = model.encoder, model.captioner
        else:
            from keras_captioning.features.run_encoder import rebuild_encoder

            backbone = rebuild_encoder(run, info, manifest, weights)
        return cls(model, backbone, vocab, size, model_type(cfg.model.type).feature,
                   max_length=cfg.eval.max_length, beam=cfg.eval.beam, length_penalty=cfg.eval.length_penalty,
                   backbone_name=manifest["backbone"], alpha=manifest.get("alpha"),
                   info={"source": {"run": os.path.basename(os.path.abspath(run_dir)), "checkpoint": checkpoint},
                         "scores": _run_scores(run_dir)})

    @classmethod
    def load(cls, bundle_dir: str) -> Captioner:
        """Loads a folder written by ``save`` (see ``keras_captioning.bundle``)."""
        from keras_captioning.bundle import load_bundle

        return cls(**load_bundle(bundle_dir))

    def save(self, out_dir: str) -> str:
        """Writes a portable bundle (model, vocabulary, backbone, metadata) to ``out_dir``."""
        from keras_captioning.bundle import save_bundle

        if not self.backbone_name:
            raise CaptioningError("save: this captioner was built without backbone_name; it cannot be rebuilt")
        return save_bundle(self, out_dir)

    def read_image(self, item) -> tuple:
        """A path, encoded bytes or an (H, W[, 3|4]) array -> (float32 (S, S, 3), display uint8 (H, W, 3)).

        Files and bytes go through extraction's decoder (``features/images.py``'s
        ``read_image``); like extraction, very large images and formats TensorFlow does not
        read (TIFF, WebP) are decoded by PIL at most 2 S per side first. Raises
        CaptioningError naming the file and what is wrong with it.
        """
        from keras_captioning.features.images import read_image, resize_image

        if isinstance(item, (str, os.PathLike, bytes, bytearray)):
            array = read_image(item, self.image_size)
        else:
            array = np.asarray(item)
            if array.ndim == 2:
                array = np.repeat(array[..., None], 3, axis=-1)
            if array.ndim != 3 or array.shape[-1] not in (3, 4):
                raise CaptioningError(f"image array: expected (H, W, 3), got shape {array.shape}")
            array = array[..., :3]
            if array.dtype != np.uint8:
                array = np.clip(array, 0, 255).astype(np.uint8)
        return resize_image(array, self.image_size), array

    def load_images(self, images) -> tuple:
        """Paths, bytes or arrays -> (float32 (B, S, S, 3) in [0, 255], display uint8 list); raises on a bad one."""
        import tensorflow as tf

        pairs = [self.read_image(item) for item in images]
        return tf.stack([p for p, _ in pairs]), [a for _, a in pairs]

    def encode(self, pixels):
        """(B, S, S, 3) pixels -> the model's features: (B, R, D) grid or (B, D) pooled."""
        out = self.backbone(pixels, training=False)
        return out[self.feature]

    def decode(self, features, beam: int, max_length: int, length_penalty: float):
        """Features -> ``DecodeResult`` (B, L): greedy for beam 1, else the best beam."""
        from keras_captioning.decoding import decode_best

        return decode_best(self.model, features, max_length, beam, length_penalty)

    def decoding_settings(self, beam=None, max_length=None, length_penalty=None) -> tuple:
        """``(beam, max_length, length_penalty)``: the captioner's defaults where None, each
        checked against the ranges of ``eval.beam`` / ``eval.max_length`` / ``eval.length_penalty``."""
        from keras_captioning.ranges import check_value

        return (
            int(check_value("eval", "beam", self.beam if beam is None else beam, "beam")),
            int(check_value("eval", "max_length", self.max_length if max_length is None else max_length,
                            "max_length")),
            float(check_value("eval", "length_penalty",
                              self.length_penalty if length_penalty is None else length_penalty,
                              "length_penalty")),
        )

    def caption(self, images, beam: int | None = None, max_length: int | None = None,
                length_penalty: float | None = None, batch_size: int = 32, on_error: str = "raise") -> list:
        """Captions ``images`` (paths, encoded bytes or arrays); one dict per image, in order.

        Each dict has ``caption`` (str), ``words``, ``tokens``, ``score`` (total log-prob,
        END included), ``attention`` ((words, R): the weights used to produce each word, or
        None for the merge model), ``image`` (the uint8 array, for drawing), ``source``
        (the path, or None) and ``error`` (None).

        ``on_error="raise"`` stops at the first unreadable image (CaptioningError naming it);
        ``"report"`` captions every readable image and gives each bad one a dict with
        ``caption`` None and ``error`` the reason. Decoding defaults (beam, max_length,
        length_penalty) are the captioner's when None.
        """
        from keras_captioning.decoding import decode_captions

        if on_error not in ("raise", "report"):
            raise CaptioningError(f"on_error: expected 'raise' or 'report', got {on_error!r}")
        beam, steps, alpha = self.decoding_settings(beam, max_length, length_penalty)
        images = list(images)
        results = []
        progress = Progress("caption", len(images), unit="images", emit=log.info, interval=PROGRESS_SECONDS,
                            enabled=len(images) > batch_size)
        for start in range(0, len(images), batch_size):
            chunk = images[start: start + batch_size]
            rows, pixels = [], []
            for item in chunk:
                source = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
                try:
                    pixel, array = self.read_image(item)
                except CaptioningError as err:
                    if on_error == "raise":
                        raise
                    rows.append({"caption": None, "source": source, "error": str(err), "image": None})
                    continue
                rows.append({"source": source, "error": None, "image": array})
                pixels.append(pixel)
            if pixels:
                import tensorflow as tf

                result = self.decode(self.encode(tf.stack(pixels)), beam, steps, alpha)
                good = iter(zip(range(len(pixels)), result.token_lists(), decode_captions(result, self.vocab)))
                for row in rows:
                    if row["error"] is None:
                        row.update(self._describe(result, *next(good)))
            results.extend(rows)
            progress.update(len(results))
        return results

    @staticmethod
    def _describe(result, i: int, ids: list, caption: str) -> dict:
        attention = None if result.attention is None else np.asarray(result.attention[i])[: len(ids)]
        return {"caption": caption, "words": caption.split(), "tokens": ids,
                "score": float(result.scores[i]), "attention": attention}

    def draw_attention(self, results: list, out_path: str) -> list:
        """Draws one attention figure per result; several images get ``OUT-<i>.png`` names."""
        from keras_captioning.viz import plot_attention

        paths = []
        stem, ext = os.path.splitext(out_path)
        for i, res in enumerate(results):
            if res.get("error"):
                continue  # an unreadable image has nothing to draw
            if res.get("attention") is None:
                raise CaptioningError("attention maps need an attention model (this run is a merge model)")
            path = out_path if len(results) == 1 else f"{stem}-{i}{ext or '.png'}"
            plot_attention(res["image"], res["words"], res["attention"], path,
                           title=res["caption"])
            paths.append(path)
        return paths


def _run_scores(run_dir: str) -> dict:
    """Every evaluation of the run: ``{report folder: {"meta", "scores"}}`` from its scores.json files."""
    from keras_captioning.run_directory import RunDirectory

    found = {}
    for path in RunDirectory(run_dir).report_files("scores.json"):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue  # a half-written report is not worth failing a save for
        if isinstance(data, dict) and "scores" in data:
            found[os.path.relpath(os.path.dirname(path), run_dir)] = {"meta": data.get("meta"),
                                                                       "scores": data["scores"]}
    return found
