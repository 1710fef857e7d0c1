"""Caption datasets, splits and the vocabulary (no TensorFlow here).

The TFRecord writer/reader and the ``tf.data`` pipeline live in ``data.tfrecords`` and
``data.pipeline`` and are imported explicitly by the code that needs TensorFlow; the
synthetic generator (``data.synthetic``, needs PIL) is run as a module or imported directly.
"""

from keras_captioning.data.coco import load_coco
from keras_captioning.data.flickr8k import load_flickr8k
from keras_captioning.data.karpathy import load_karpathy
from keras_captioning.data.loaders import load_dataset, load_synthetic
from keras_captioning.data.records import CaptionRecord
from keras_captioning.data.splits import select_and_split
from keras_captioning.data.table import load_table
from keras_captioning.data.vocab import Vocabulary, normalize_caption

__all__ = [
    "CaptionRecord",
    "Vocabulary",
    "load_coco",
    "load_dataset",
    "load_flickr8k",
    "load_karpathy",
    "load_synthetic",
    "load_table",
    "normalize_caption",
    "select_and_split",
]
