"""Export a ``Captioner``'s greedy path as a LiteRT (TensorFlow Lite) flatbuffer.

The ``serving_default`` signature of the ``.tflite`` file::

    inputs   pixels    float32 (B, S, S, 3)  RGB in [0, 255], made by ``features/images.py``
                                             (decode, bilinear resize to S x S, no anti-aliasing)
    outputs  tokens    int32 (B, L)          word ids, 0-padded after the caption
             scores    float32 (B,)          total log-probability, END included
             lengths   int32 (B,)
             attention float32 (B, L, R)     attention model only

and ``<out>.json`` holds the vocabulary (``id_to_word``: caption = the words of the
non-zero tokens joined by spaces), S, and the decoding settings. The backbone (with its
``preprocess_input``), the captioner and the greedy loop are inside; it is the graph of
the greedy SavedModel minus its first and last step.

Why those two steps stay outside (measured with TF 2.21's converter, builtins only, on the
bytes -> captions graph of ``export/saved_model.py``):

    DecodeImage          TFLite has no image decoder op: the app decodes with its platform's
                         decoder (or ``tf.io.decode_image``) and resizes bilinearly to S x S
    ResizeBilinear       on the decoded uint8 image (TF's op returns float32, TFLite's returns
                         the input type), hence done with the decoding
    UnsortedSegmentJoin  joining words into one string (``tf.strings.reduce_join``): no string
                         builtins; the app joins the words of ``tokens``

Those ops exist only as Select TF ("Flex") kernels, which need the Flex delegate at run time;
the ``tf.lite.Interpreter`` of the TensorFlow 2.21 pip package does not link it any more
("Select TensorFlow op(s) ... not supported by this interpreter"), so such a file could not
even be checked here. The decoding loop itself was blocked too (TensorListReserve /
SetItem / Stack from a growing TensorArray); it now writes fixed-size buffers and converts
to the builtin WHILE. If the builtins-only conversion ever fails, ``export_litert`` raises
with the op names rather than writing a file that needs Flex.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from keras_captioning.errors import CaptioningError
from keras_captioning.utils import atomic_output, make_dirs, write_json_atomic

LITERT_INFO_SUFFIX = ".json"  # <out>.tflite.json: vocabulary, sizes and decoding settings


def export_litert(captioner, out_path: str, max_length: int | None = None) -> dict:
    """Writes the greedy captioner as ``out_path`` (.tflite) plus ``<out_path>.json``; returns that info."""
    import keras
    import tensorflow as tf

    from keras_captioning import __version__
    from keras_captioning.export.saved_model import caption_graph

    _, max_length, _ = captioner.decoding_settings(1, max_length)
    if os.path.exists(out_path):
        raise CaptioningError(f"{out_path}: exists; choose a new file name")
    size = captioner.image_size
    parent = os.path.dirname(os.path.abspath(out_path))
    make_dirs(parent)
    with atomic_output(out_path) as target:  # OSError (no space, read-only) -> one line naming out_path
        tmp = tempfile.mkdtemp(prefix=".litert-", dir=parent)
        try:
            saved = os.path.join(tmp, "saved_model")
            archive = keras.export.ExportArchive()
            archive.track(captioner.backbone)
            archive.track(captioner.model)
            archive.add_endpoint("serve", caption_graph(captioner, 1, max_length, images_to_pixels=lambda x: x,
                                                        with_text=False),
                                 input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")])
            archive.write_out(saved, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            try:
                blob = converter.convert()
            except Exception as err:  # ConverterError with MLIR diagnostics
                raise CaptioningError(f"litert: the greedy graph does not convert to TFLite builtins: "
                                      f"{_summarise(str(err))}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with open(target, "wb") as fh:
            fh.write(blob)
    info = {
        "format": "keras_captioning.litert",
        "package_version": __version__,
        "signature": "serving_default",
        "inputs": {"pixels": f"float32 (B, {size}, {size}, 3) RGB in [0, 255]"},
        "outputs": {"tokens": f"int32 (B, {max_length})", "scores": "float32 (B,)", "lengths": "int32 (B,)",
                    **({"attention": f"float32 (B, {max_length}, R)"} if captioner.has_attention else {})},
        "image_size": size,
        "preprocessing": "tf.io.decode_image(channels=3, expand_animations=False), then "
                         f"tf.image.resize to {size}x{size} (bilinear, no anti-aliasing)",
        "decoding": {"method": "greedy", "beam": 1, "max_length": max_length},
        "pad_id": captioner.vocab.pad_id,
        "id_to_word": list(captioner.vocab.id_to_word),
        "source": captioner.info.get("source"),
    }
    write_json_atomic(out_path + LITERT_INFO_SUFFIX, info, indent=1)
    return info


def _summarise(message: str) -> str:
    """The converter's diagnostics -> the TF op names it could not legalize and its first error line."""
    ops = sorted(set(re.findall(r"'tf\.([A-Za-z0-9]+)' op", message)) |
                 set(re.findall(r"\btf\.([A-Z][A-Za-z0-9]+)\(", message)))
    first = next((line.strip() for line in message.splitlines() if "error:" in line), message.strip()[:300])
    return f"ops {ops}: {first[:400]}"
