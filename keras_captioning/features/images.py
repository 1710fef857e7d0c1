"""The one image decoder: encoded bytes -> RGB pixels -> the backbone's S x S input.

Feature extraction, ``Captioner`` and the exported SavedModel all call these two functions,
so an image gets the same pixels (bit for bit) wherever it is captioned:

    decode_image(contents)      tf.string () JPEG/PNG/GIF/BMP bytes -> uint8 (H, W, 3)
    resize_image(image, size)   (H, W, 3) -> float32 (S, S, 3) in [0, 255]

``tf.io.decode_image(channels=3, expand_animations=False)``: grayscale -> RGB, alpha
dropped, 16-bit PNG scaled to 8 bits, first GIF frame. ``tf.image.resize``: bilinear, no
anti-aliasing, aspect ratio not kept (the study's preprocessing). The backbone's
``preprocess_input`` is inside the backbone model, not here.
"""

import tensorflow as tf


def decode_image(contents):
    """Encoded image bytes (scalar tf.string) -> uint8 (H, W, 3)."""
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def resize_image(image, size: int):
    """(H, W, 3) pixels, any dtype in [0, 255] -> float32 (size, size, 3) in [0, 255]."""
    return tf.image.resize(image, (size, size))
