"""Writes PyTorch's legacy ``torch.save`` stream without torch, for the converter's tests.

The layout (what ``torch.save(..., _use_new_zipfile_serialization=False)`` writes): pickles of the
magic number, the protocol version and system info, then the state dict whose tensors are
``torch._utils._rebuild_tensor_v2(storage, offset, shape, strides, ...)`` with storages as persistent
ids, then the list of storage keys, then per key an int64 element count and the raw bytes.
"""

import collections
import contextlib
import io
import pickle
import struct
import sys
import types

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C


@contextlib.contextmanager
def _fake_torch():
    """Module objects named like torch's, so pickle writes the globals a real checkpoint holds."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage = type("FloatStorage", (), {"__module__": "torch", "__qualname__": "FloatStorage"})
    torch.FloatStorage, torch._utils = storage, utils
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield _rebuild_tensor_v2, storage
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, rebuild, storage, shape, strides):
        self.rebuild, self.storage, self.shape, self.strides = rebuild, storage, shape, strides

    def __reduce__(self):
        return self.rebuild, (self.storage, 0, self.shape, self.strides, False, collections.OrderedDict())


def legacy_bytes(tensors: dict, layouts: dict | None = None) -> bytes:
    """The legacy stream of ``{name: float32 array}``.

    ``layouts[name]`` = a permutation of the array's axes: its storage then holds
    ``array.transpose(perm)`` contiguously and the tensor's strides say how to read it back (as
    the published EfficientNet-Lite stem weight, strides 1, 32, 288, 96).
    """
    layouts = layouts or {}
    out = io.BytesIO()
    with _fake_torch() as (rebuild, storage_type):
        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, _Storage):
                    return ("storage", storage_type, obj.key, "cpu", obj.data.size, None)
                return None

        state, storages = collections.OrderedDict(), []
        for index, (name, array) in enumerate(tensors.items()):
            array = np.asarray(array, np.float32)
            perm = layouts.get(name, tuple(range(array.ndim)))
            stored = np.ascontiguousarray(array.transpose(perm))
            element_strides = [s // 4 for s in stored.strides]
            strides = tuple(element_strides[perm.index(axis)] for axis in range(array.ndim))
            storage = _Storage(str(1000 + index), stored.ravel())
            storages.append(storage)
            state[name] = _Tensor(rebuild, storage, tuple(array.shape), strides)
        for header in (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                     "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, out, protocol=2)
        Pickler(out, protocol=2).dump(state)
        pickle.dump([s.key for s in storages], out, protocol=2)
        for storage in storages:
            out.write(struct.pack("<q", storage.data.size))
            out.write(storage.data.astype("<f4").tobytes())
    return out.getvalue()
