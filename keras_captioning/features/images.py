"""The one image decoder: encoded bytes -> RGB pixels -> the backbone's S x S input.

Feature extraction, ``Captioner`` and the exported SavedModel all call these two functions,
so an image gets the same pixels (bit for bit) wherever it is captioned:

    decode_image(contents)      tf.string () JPEG/PNG/GIF/BMP bytes -> uint8 (H, W, 3)
    resize_image(image, size)   (H, W, 3) -> float32 (S, S, 3) in [0, 255]

``tf.io.decode_image(channels=3, expand_animations=False)``: grayscale -> RGB, alpha
dropped, 16-bit PNG scaled to 8 bits, first GIF frame. ``tf.image.resize``: bilinear, no
anti-aliasing, aspect ratio not kept (the study's preprocessing). The backbone's
``preprocess_input`` is inside the backbone model, not here.

Files and bytes: ``read_image`` is the one reader of an image file, or of its encoded bytes,
for every Python caller (``Captioner`` for paths and bytes, the evaluation panels); extraction
runs the same checks and fallback in its tf.data pipeline (``runner.py``). The exported
SavedModel decodes in its graph with ``decode_image`` only (no PIL there): very large images
are decoded at full size and TIFF/WebP bytes are refused by its signature, so convert those
to JPEG/PNG before calling it.

Extraction:

Images. A thread pool first checks every image of a shard with PIL: missing, empty (0
bytes), unrecognised (e.g. a text file named .jpg) and corrupt files are skipped and listed
with the reason; JPEGs are decoded at 1/8 scale (``draft``), which reads every byte of the
compressed data and so catches truncation, at about 0.6 ms for a 640x480 photo (against
~1 ms for TensorFlow's full decode and ~100 ms for InceptionV3 on CPU); PNG/GIF/BMP get
``verify()`` (chunk checksums, no decode). Files that pass go through a parallel tf.data
pipeline: ``tf.io.decode_image(channels=3, expand_animations=False)`` (JPEG incl. CMYK,
PNG incl. 16-bit and alpha, GIF first frame, BMP; grayscale -> RGB, alpha dropped), then
``tf.image.resize`` to S x S (bilinear, aspect ratio not kept: the study's preprocessing).
Only two kinds of files take a Python (PIL) path inside the pipeline: images above
``LARGE_IMAGE_PIXELS`` and formats TensorFlow does not decode (TIFF, WebP, ...). PIL then
decodes JPEGs at a reduced DCT scale (``draft``) and shrinks the result to at most 2 S per
side before TensorFlow resizes it, so a 12000 x 9000 JPEG costs a few MB instead of 324 MB
(other formats are decoded in full, up to PIL's decompression-bomb limit). Anything
TensorFlow still refuses is dropped by ``ignore_errors`` and retried with PIL; if PIL fails
too it is skipped with PIL's reason. A 1 x 1 image is valid and is simply resized. EXIF
orientation is ignored, as in the study. A float16 grid that overflows (inf) stops the
run with a message to use ``dtype="float32"``.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from keras_captioning.errors import CaptioningError
from keras_captioning.utils import first_line

LARGE_IMAGE_PIXELS = 4096 * 4096  # above this the image is shrunk by PIL before TensorFlow sees it
TF_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP")  # PIL format names tf.io.decode_image reads


def decode_image(contents):
    """Encoded image bytes (scalar tf.string) -> uint8 (H, W, 3)."""
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def resize_image(image, size: int):
    """(H, W, 3) pixels, any dtype in [0, 255] -> float32 (size, size, 3) in [0, 255]."""
    return tf.image.resize(image, (size, size))


def load_pixels(path, use_pil, size: int):
    """In a tf.data map: an image file (tf.string path) -> float32 (size, size, 3) in [0, 255].

    ``use_pil`` (tf.bool, ``ImageCheck.use_pil``) sends very large images and formats TensorFlow
    does not read through ``load_image_pil`` (at most 2 ``size`` per side); the rest through
    ``decode_image``. Extraction and CNN fine-tuning read their images with this.
    """
    image = tf.cond(use_pil, lambda: _pil_decode(path, 2 * int(size)), lambda: decode_image(tf.io.read_file(path)))
    return resize_image(image, size)


def _pil_decode(path, max_side: int):
    image = tf.numpy_function(lambda p: load_image_pil(p.decode("utf-8"), max_side), [path], tf.uint8,
                              stateful=False)
    image.set_shape([None, None, 3])
    return image


@dataclasses.dataclass
class ImageCheck:
    """Outcome of ``check_image``: usable or not, and whether it needs the PIL path."""

    ok: bool
    use_pil: bool = False
    reason: str = ""


def check_image(path: str) -> ImageCheck:
    """Cheap PIL check of one image file (see the module docstring); never raises."""
    try:
        if os.path.isdir(path):
            return ImageCheck(False, reason="is a directory, not an image file")
        if os.path.getsize(path) == 0:
            return ImageCheck(False, reason="empty file (0 bytes)")
    except FileNotFoundError:
        return ImageCheck(False, reason="file not found")
    except OSError as err:
        return ImageCheck(False, reason=f"cannot read the file ({err.strerror})")
    return _check_with_pil(path)


def _check_with_pil(source) -> ImageCheck:
    """``check_image``'s PIL part, for a path or a binary file object."""
    try:
        with Image.open(source) as image:
            fmt, (width, height) = image.format, image.size
            if fmt in ("JPEG", "MPO"):
                # 1/8-scale decode: reads all compressed data (finds truncation) at a fraction of the cost.
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
            else:
                image.verify()
    except UnidentifiedImageError:
        return ImageCheck(False, reason="not an image (format not recognised)")
    except Image.DecompressionBombError as err:
        return ImageCheck(False, reason=f"too many pixels ({first_line(err)}); shrink it or raise "
                                        "PIL.Image.MAX_IMAGE_PIXELS")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
        return ImageCheck(False, reason=f"corrupt or truncated image data ({first_line(err)})")
    if width < 1 or height < 1:
        return ImageCheck(False, reason=f"no pixels ({width}x{height})")
    return ImageCheck(True, use_pil=width * height > LARGE_IMAGE_PIXELS or fmt not in TF_FORMATS)


def load_image_pil(path, max_side: int) -> np.ndarray:
    """Decode ``path`` with PIL to uint8 RGB (h, w, 3), at most ``max_side`` per side.

    JPEGs are decoded at a reduced DCT scale (``draft``) so huge photos never exist at full
    size in memory; 16-bit images are scaled to 8 bits (/257, as TensorFlow does); palette
    and alpha images are converted through RGBA and the alpha channel is dropped.
    """
    with Image.open(path) as image:
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (max_side, max_side))
        image.load()
        rgb = _to_rgb(image)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode != "F":
            values = values / 257.0  # 16-bit range -> 8-bit, like tf.io.decode_png(dtype=uint8)
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if image.mode in ("P", "PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")  # palette transparency and premultiplied alpha resolved first
    return image if image.mode == "RGB" else image.convert("RGB")


def read_image(source: str | os.PathLike | bytes, image_size: int) -> np.ndarray:
    """One image file, or its encoded bytes -> uint8 (H, W, 3), decoded exactly as extraction decodes it.

    ``check_image`` first; then ``decode_image`` (TensorFlow), or PIL at most 2 S per side for
    very large images and formats TensorFlow does not read, and PIL again when TensorFlow
    refuses a file the check passed (extraction's retry). Raises CaptioningError naming the
    file (``image bytes`` for bytes) and what is wrong with it.
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name, opener = "image bytes", lambda: io.BytesIO(data)
        check = _check_with_pil(opener()) if data else ImageCheck(False, reason="empty (0 bytes)")
        contents = lambda: tf.constant(data)  # noqa: E731
    else:
        name = path = os.fspath(source)
        opener = lambda: path  # noqa: E731
        check = check_image(path)
        contents = lambda: tf.io.read_file(path)  # noqa: E731
    if not check.ok:
        raise CaptioningError(f"{name}: {check.reason}")
    if not check.use_pil:
        try:
            return decode_image(contents()).numpy()
        except tf.errors.OpError:  # extraction retries these with PIL too
            pass
    try:
        return load_image_pil(opener(), max_side=2 * int(image_size))
    except Exception as err:  # any decoder failure means "this file cannot be used"
        raise CaptioningError(f"{name}: could not be decoded ({first_line(err)})") from None
