"""Read a PyTorch ``state_dict`` file into NumPy arrays without importing torch.

Two layouts are read:

* the legacy ``torch.save`` stream (torch < 1.6, or ``_use_new_zipfile_serialization=False``):
  five pickles in a row: the magic number, the protocol version, system info, the object (its
  tensors refer to storages by persistent id), then the list of storage keys; after them, for
  each key in that order, an 8-byte little-endian element count and the storage's raw bytes;
* the zip layout of newer torch (``archive/data.pkl`` + one ``archive/data/<key>`` per storage).

The unpickler resolves only what a state dict holds (``OrderedDict``, tensor rebuilds, typed
storages) and refuses every other global, so a crafted file cannot run code. A tensor is a view
of its storage (offset, shape, strides in elements): strides are honoured, because published
checkpoints hold non-contiguous tensors (EfficientNet-Lite's stem weight has strides 1, 32, 288, 96).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from keras_captioning.errors import CaptioningError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy torch.save stream

STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, key: str, dtype, numel: int):
        self.key, self.dtype, self.numel = key, np.dtype(dtype), int(numel)
        self.array = None  # filled when the raw bytes are read


class _TensorRef:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, int(offset), tuple(shape), tuple(stride)


def _rebuild_tensor(storage, offset, shape, stride, *unused):
    return _TensorRef(storage, offset, shape, stride)


class _StorageType:
    def __init__(self, name: str):
        self.dtype = STORAGE_DTYPES[name]


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CaptioningError(f"{self.path}: holds {module}.{name}, which a weights file does not; "
                              "expected a state_dict of tensors")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CaptioningError(f"{self.path}: unexpected persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise CaptioningError(f"{self.path}: unsupported storage type {storage_type!r:.60}")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, numel)
        return self.storages[key]


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` of a ``torch.save``-d state dict (legacy or zip layout), in file order.

    Raises:
        CaptioningError: the file is missing, not a torch checkpoint, truncated, or holds
            something other than a (nested) dict of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CaptioningError(f"{path}: checkpoint not found")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as fh:
            return _read_legacy(fh, path)
    except CaptioningError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, struct.error, zipfile.BadZipFile) as err:
        raise CaptioningError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None


def _read_legacy(fh, path: str) -> dict[str, np.ndarray]:
    try:
        magic = pickle.load(fh)
    except Exception:
        magic = None
    if magic != LEGACY_MAGIC:
        raise CaptioningError(f"{path}: not a PyTorch checkpoint (no torch.save magic number)")
    pickle.load(fh)  # protocol version
    info = pickle.load(fh)
    if isinstance(info, dict) and info.get("little_endian") is False:
        raise CaptioningError(f"{path}: a big-endian checkpoint; convert it on a little-endian machine")
    unpickler = _Unpickler(fh, path)
    obj = unpickler.load()
    keys = pickle.load(fh)
    for key in keys:
        storage = unpickler.storages.get(str(key))
        header = fh.read(8)
        if len(header) < 8:
            raise CaptioningError(f"{path}: truncated (storage {key} missing)")
        (count,) = struct.unpack("<q", header)
        if storage is None:
            raise CaptioningError(f"{path}: storage {key} is listed but no tensor refers to it")
        raw = fh.read(count * storage.dtype.itemsize)
        if len(raw) < count * storage.dtype.itemsize:
            raise CaptioningError(f"{path}: truncated (storage {key} has {len(raw)} of "
                                  f"{count * storage.dtype.itemsize} bytes)")
        storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=count)
    return _flatten(obj, path)


def _read_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise CaptioningError(f"{path}: a zip file without data.pkl, not a PyTorch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        unpickler = _Unpickler(io.BytesIO(archive.read(pkl)), path)
        obj = unpickler.load()
        for key, storage in unpickler.storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return _flatten(obj, path)


def _flatten(obj, path: str, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict) and not prefix:
        obj = obj["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(obj, dict):
        raise CaptioningError(f"{path}: holds a {type(obj).__name__}, expected a state_dict (a dict of tensors)")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        key = f"{prefix}{name}"
        if isinstance(value, _TensorRef):
            out[key] = _materialise(value, key, path)
        elif isinstance(value, dict):
            out.update(_flatten(value, path, f"{key}."))
        # other entries (version numbers, metadata) carry no weights
    return out


def _materialise(ref: _TensorRef, name: str, path: str) -> np.ndarray:
    data = ref.storage.array
    if data is None:
        raise CaptioningError(f"{path}: {name}: its storage {ref.storage.key} has no data")
    if len(ref.shape) != len(ref.stride) or any(s < 0 for s in ref.shape) or any(s < 0 for s in ref.stride):
        raise CaptioningError(f"{path}: {name}: bad shape {ref.shape} / strides {ref.stride}")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride) if n > 0)
    if (0 in ref.shape and ref.offset <= data.size) or last < data.size:
        item = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(data[ref.offset:], shape=ref.shape,
                                               strides=tuple(s * item for s in ref.stride), writeable=False)
        return np.ascontiguousarray(view)  # a C-ordered copy
    raise CaptioningError(f"{path}: {name}: shape {ref.shape} with strides {ref.stride} at offset "
                          f"{ref.offset} runs past its storage of {data.size} elements")
