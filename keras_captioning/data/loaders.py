"""``load_dataset``: pick a caption loader by format name."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from keras_captioning.data.coco import load_coco
from keras_captioning.data.flickr8k import load_flickr8k
from keras_captioning.data.karpathy import load_karpathy
from keras_captioning.data.records import CaptionRecord
from keras_captioning.data.table import load_table
from keras_captioning.errors import CaptioningError

# Layout written by ``keras_captioning.data.synthetic`` (defined here, not there, so that
# loading never imports PIL).
SYNTHETIC_CAPTIONS = "captions.json"
SYNTHETIC_OBJECTS = "objects.json"
SYNTHETIC_IMAGES = "images"


def load_synthetic(root: str | os.PathLike, check_files: bool = True) -> list[CaptionRecord]:
    """Load a dataset written by ``keras_captioning.data.synthetic`` (split ``"unsplit"``).

    Same as ``load_coco(root/captions.json, root/images)``; split it with
    ``select_and_split(..., ratios=...)``.
    """
    root = Path(root)
    return load_coco(root / SYNTHETIC_CAPTIONS, root / SYNTHETIC_IMAGES, check_files=check_files)


LOADERS = {
    "coco": load_coco,
    "flickr8k": load_flickr8k,
    "karpathy": load_karpathy,
    "synthetic": load_synthetic,
    "table": load_table,
}


# Format-independent argument names, mapped to each file loader's first two parameters.
GENERIC_ARGUMENTS = ("captions", "images")


def load_dataset(fmt: str, **kwargs) -> list[CaptionRecord]:
    """Load captions with the loader registered as ``fmt``.

    Args:
        fmt: ``"coco"`` (``captions_json, image_dir, split=None``), ``"karpathy"``
            (``json_path, image_root, restval="train"``), ``"flickr8k"`` (``captions_path,
            image_dir, split_files=None``), ``"table"`` (``table_path, image_dir, image_column="image",
            caption_column="caption", split_column="split", delimiter=None``) or ``"synthetic"``
            (``root``); every loader also
            takes ``check_files=True``.
        **kwargs: the chosen loader's arguments. For the three file formats the annotation
            file and the image folder may also be given as ``captions=`` and ``images=``.

    Raises:
        CaptioningError: unknown format, or arguments the loader does not take / misses.
    """
    if fmt not in LOADERS:
        raise CaptioningError(
            f"format: unknown dataset format {fmt!r}; valid formats: {', '.join(sorted(LOADERS))}"
        )
    loader = LOADERS[fmt]
    signature = inspect.signature(loader)
    names = list(signature.parameters)
    if loader is not load_synthetic:
        for generic, name in zip(GENERIC_ARGUMENTS, names):
            if generic in kwargs and name not in kwargs:
                kwargs[name] = kwargs.pop(generic)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise CaptioningError(f"format {fmt!r}: {err}; it takes {', '.join(names)}") from None
    return loader(**kwargs)
