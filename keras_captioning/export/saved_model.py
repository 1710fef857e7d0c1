"""Export a ``Captioner`` as a self-contained TensorFlow SavedModel.

The ``serving_default`` signature::

    inputs   images    tf.string (B,)        encoded JPEG / PNG / GIF / BMP bytes
    outputs  captions  tf.string (B,)        words joined by single spaces (no <start>/<end>)
             scores    float32 (B,)          total log-probability of the caption, END included
             tokens    int32 (B, L)          word ids, 0-padded after the caption (L = max_length)
             lengths   int32 (B,)            number of words
             attention float32 (B, L, R)     attention model only: the weights over the R
                                             regions used to produce each word (0 past lengths)

Everything runs inside the graph: ``features/images.py`` decode and resize, the backbone
(its ``preprocess_input`` included), ``decoding.graph.decode_tensors`` (greedy for beam 1,
else beam search) and the vocabulary lookup, so the folder loads with plain
``tf.saved_model.load(dir).signatures["serving_default"]`` in a Python without
keras_captioning (or Keras custom objects) and gives the captions ``Captioner.caption``
gives with the same decoding settings.
"""

from __future__ import annotations

import os

import tensorflow as tf

from keras_captioning import __version__
from keras_captioning.decoding.graph import decode_tensors
from keras_captioning.errors import CaptioningError
from keras_captioning.features.images import decode_image, resize_image
from keras_captioning.utils import atomic_output, first_line, write_json_atomic

EXPORT_INFO_FILE = "keras_captioning.json"  # written beside saved_model.pb: what the signature does


def caption_graph(captioner, beam: int, max_length: int, length_penalty: float = 0.0,
                  images_to_pixels=None, with_text: bool = True):
    """The serving computation as a Python function of ``images`` tf.string (B,) -> output dict.

    ``images_to_pixels`` replaces the in-graph decode + resize (the LiteRT export takes
    pixels); by default it is ``features/images.py``'s decoder. ``with_text=False`` leaves
    out ``captions`` (the string join has no LiteRT builtin).
    """
    size, feature, pad = captioner.image_size, captioner.feature, captioner.vocab.pad_id
    words = tf.constant(captioner.vocab.id_to_word)  # (V,) id -> word

    def to_pixels(images):
        return tf.map_fn(lambda contents: resize_image(decode_image(contents), size), images,
                         fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))  # (B, S, S, 3)

    def serve(images):
        pixels = (images_to_pixels or to_pixels)(images)
        features = captioner.backbone(pixels, training=False)[feature]
        out = decode_tensors(captioner.model, features, max_length, beam, length_penalty)
        tokens = out["tokens"]  # (B, L); PAD only after the caption's last word
        result = {
            "scores": tf.identity(out["scores"]),
            "tokens": tf.identity(tokens),
            "lengths": tf.identity(out["lengths"]),
        }
        if with_text:
            text = tf.ragged.boolean_mask(tf.gather(words, tokens), tf.not_equal(tokens, pad))
            result["captions"] = tf.strings.reduce_join(text, axis=1, separator=" ")
        if out["attention"] is not None:
            result["attention"] = tf.identity(out["attention"])
        return result

    return serve


def export_saved_model(captioner, out_dir: str, beam: int | None = None, max_length: int | None = None,
                       length_penalty: float | None = None) -> dict:
    """Writes ``captioner`` as a SavedModel in ``out_dir`` (see the module docstring).

    Decoding settings default to the captioner's. Returns the export info also written to
    ``<out_dir>/keras_captioning.json`` (signature, decoding settings, package version).
    """
    import keras

    beam, max_length, alpha = captioner.decoding_settings(beam, max_length, length_penalty)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CaptioningError(f"{out_dir}: is a file; --out names the folder to create for the SavedModel")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise CaptioningError(f"{out_dir}: exists and is not empty; choose a new folder")

    archive = keras.export.ExportArchive()
    archive.track(captioner.backbone)
    archive.track(captioner.model)
    archive.add_endpoint("serve", caption_graph(captioner, beam, max_length, alpha),
                         input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    info = {
        "format": "keras_captioning.saved_model",
        "package_version": __version__,
        "signature": "serving_default",
        "inputs": {"images": "tf.string (B,): encoded JPEG/PNG/GIF/BMP bytes"},
        "outputs": {"captions": "tf.string (B,)", "scores": "float32 (B,) total log-prob",
                    "tokens": f"int32 (B, {max_length})", "lengths": "int32 (B,)",
                    **({"attention": f"float32 (B, {max_length}, R)"} if captioner.has_attention else {})},
        "decoding": {"beam": beam, "max_length": max_length, "length_penalty": alpha,
                     "method": "greedy" if beam == 1 else "beam search"},
        "backbone": {"name": captioner.backbone_name, "image_size": captioner.image_size},
        "source": captioner.info.get("source"),
    }
    # Written into a temporary folder renamed to out_dir at the end: a folder named out_dir is complete.
    with atomic_output(out_dir) as tmp:
        _write_archive(archive, tmp)
        write_json_atomic(os.path.join(tmp, EXPORT_INFO_FILE), info, indent=1)
    return info


def _write_archive(archive, path: str) -> None:
    """``archive.write_out(path)``; TF's file-system errors (no space, read-only) become OSError."""
    import tensorflow as tf

    try:
        archive.write_out(path, verbose=False)
    except tf.errors.OpError as err:
        raise OSError(first_line(err)) from None

