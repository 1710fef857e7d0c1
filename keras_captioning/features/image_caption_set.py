"""One split's image files with their captions, batched as pixels: the data of stages that train
the CNN itself (``train.objective=finetune``) instead of reading cached features.

Images are read by ``images.load_pixels`` (the decoder extraction uses, bit for bit the same
pixels), checked first with ``check_image`` (a missing, empty or corrupt file is a logged skip,
never a failed run). Captions are token ids made by the vocabulary exactly as the feature
shards store them (``vocab.encode`` then ``truncate`` to ``data.max_length``); captions
without a word and images without such a caption are left out, as the shard pipelines do.

Training batches are image-major: ``images_per_batch`` images, each decoded and encoded once,
with every caption of each (``{"features": (G, S, S, 3) float32, "captions": (B, L) int32,
"image_index": (B,) int32}``, L the longest caption of the batch). Evaluation batches are
``{"image_id", "features" (pixels), "references"}``, the layout of ``make_eval_dataset``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from keras_captioning.errors import CaptioningError
from keras_captioning.features.images import check_image, load_pixels

log = logging.getLogger(__name__)

CHECK_THREADS = 8
SHOWN_SKIPS = 5


class ImageCaptionSet:
    """Image files, their caption token ids and reference texts (see the module docstring).

    Args:
        image_ids, paths: one entry per image.
        use_pil: per image, whether it takes the PIL path (``ImageCheck.use_pil``).
        captions: per image, its captions' token ids (each ``[START, ..., END]``).
        references: per image, its caption texts.
        image_size: the backbone's input side S.
    """

    def __init__(self, image_ids, paths, use_pil, captions, references, image_size: int):
        if not (len(image_ids) == len(paths) == len(use_pil) == len(captions) == len(references)):
            raise CaptioningError("ImageCaptionSet: image_ids, paths, use_pil, captions and references "
                                  "must have one entry per image")
        self.image_ids = [str(i) for i in image_ids]
        self.paths = [str(p) for p in paths]
        self.use_pil = np.asarray(use_pil, bool)
        self.captions = [list(map(list, c)) for c in captions]
        self.references = [list(r) for r in references]
        self.image_size = int(image_size)
        self._captions_padded = None  # _caption_array(), built once for all epochs

    @classmethod
    def from_records(cls, records, vocab, image_size: int, max_length: int | None = None, name: str = "split"):
        """The usable images of ``records`` (``CaptionRecord``s); unreadable ones are logged and left out."""
        records = list(records)
        with ThreadPoolExecutor(CHECK_THREADS) as pool:
            checks = list(pool.map(check_image, [r.image_path for r in records]))
        ids, paths, pil, captions, references, skipped = [], [], [], [], [], []
        for record, check in zip(records, checks):
            if not check.ok:
                skipped.append(f"{record.image_path}: {check.reason}")
                continue
            encoded = [vocab.truncate(vocab.encode(c), max_length) for c in record.captions]
            encoded = [seq for seq in encoded if vocab.has_word(seq)]
            if not encoded:
                skipped.append(f"{record.image_path}: no caption with a word in the vocabulary")
                continue
            ids.append(record.image_id)
            paths.append(record.image_path)
            pil.append(check.use_pil)
            captions.append(encoded)
            references.append([c for c in record.captions if c.strip()])
        for line in skipped[:SHOWN_SKIPS]:
            log.warning("%s: skipped %s", name, line)
        if len(skipped) > SHOWN_SKIPS:
            log.warning("%s: skipped %d more images", name, len(skipped) - SHOWN_SKIPS)
        return cls(ids, paths, pil, captions, references, image_size)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_captions(self) -> int:
        return sum(map(len, self.captions))

    def _caption_array(self) -> np.ndarray:
        """int32 (N, K, L): every image's captions, zero rows where an image has fewer than K."""
        if self._captions_padded is not None:
            return self._captions_padded
        k = max(map(len, self.captions))
        width = max(len(seq) for caps in self.captions for seq in caps)
        out = np.zeros((len(self), k, width), np.int32)
        for i, caps in enumerate(self.captions):
            for j, seq in enumerate(caps):
                out[i, j, :len(seq)] = seq
        self._captions_padded = out
        return out

    def _pixels(self, order: np.ndarray, *extra):
        size = self.image_size
        paths = np.asarray(self.paths, dtype=object).astype(str)[order]
        ds = tf.data.Dataset.from_tensor_slices((paths, self.use_pil[order], *(e[order] for e in extra)))
        return ds.map(lambda p, u, *rest: (load_pixels(p, u, size), *rest), num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True)

    def train_batches(self, images_per_batch: int, seed: int | None = None) -> tf.data.Dataset:
        """One pass over the images in image-major batches, shuffled by ``seed`` (None: in order)."""
        if not len(self):
            raise CaptioningError("ImageCaptionSet: no images to train on")
        order = np.arange(len(self)) if seed is None else np.random.default_rng(seed).permutation(len(self))
        ds = self._pixels(order, self._caption_array()).batch(images_per_batch)

        def flatten(pixels, captions):
            groups, k = tf.shape(captions)[0], tf.shape(captions)[1]
            rows = tf.reshape(captions, (groups * k, -1))
            image_index = tf.repeat(tf.range(groups, dtype=tf.int32), k)
            real = rows[:, 0] > 0  # a missing caption is a zero row
            rows, image_index = tf.boolean_mask(rows, real), tf.boolean_mask(image_index, real)
            width = tf.reduce_max(tf.reduce_sum(tf.cast(rows > 0, tf.int32), axis=1))
            return {"features": pixels, "captions": rows[:, :width], "image_index": image_index}

        return ds.map(flatten, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def eval_batches(self, batch_size: int) -> tf.data.Dataset:
        """``{"image_id", "features" (pixels), "references" (padded with "")}`` in file order."""
        k = max(map(len, self.references)) if len(self) else 1
        refs = np.array([r + [""] * (k - len(r)) for r in self.references], dtype=object).astype(str)
        ids = np.asarray(self.image_ids, dtype=object).astype(str)
        ds = self._pixels(np.arange(len(self)), ids, refs)
        ds = ds.map(lambda pixels, image_id, references: {"image_id": image_id, "features": pixels,
                                                          "references": references})
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
