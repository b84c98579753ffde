"""Read the tensors of a PyTorch checkpoint into numpy arrays without torch.

Handles both of torch's serialization formats: the legacy one (a sequence of pickles followed by the
raw storages) and the zip one (`<name>/data.pkl` plus one `<name>/data/<key>` file per storage).
The unpickler only resolves the few globals a plain state dict references, plus a short list of
metadata classes that training frameworks save beside it (they load as inert `Metadata` records), so
loading a checkpoint cannot run arbitrary code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


# Saved by PyTorch Lightning and pyannote.audio beside the state dict (library versions, the training task).
METADATA_GLOBALS = {
    ("torch.torch_version", "TorchVersion"),
    ("pyannote.audio.core.task", "Specifications"),
    ("pyannote.audio.core.task", "Problem"),
    ("pyannote.audio.core.task", "Resolution"),
}


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader understands."""


class Metadata:
    """What a METADATA_GLOBALS object loads as: its constructor arguments and pickled state, and no code."""

    def __new__(cls, *args):
        record = super().__new__(cls)
        record.args = args
        record.state = None
        return record

    def __init__(self, *args):
        pass

    def __setstate__(self, state):
        self.state = state


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor whose storage may not be read yet (legacy files store the bytes after the pickle)."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError(f"storage {self.storage.key} has no data")
        if not self.shape:
            return data[self.offset : self.offset + 1].reshape(()).copy()
        if any(size == 0 for size in self.shape):
            return np.zeros(self.shape, dtype=data.dtype)
        last = self.offset + sum((size - 1) * step for size, step in zip(self.shape, self.stride, strict=True))
        if self.offset < 0 or min(self.stride) < 0 or last >= data.size:
            raise CheckpointError(f"tensor view exceeds storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(step * data.itemsize for step in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if not isinstance(storage, _Storage):
        raise CheckpointError("tensor does not reference a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if (module, name) in METADATA_GLOBALS:
            return Metadata
        raise CheckpointError(f"checkpoint references '{module}.{name}', which is not allowed")

    def persistent_load(self, pid):
        # Legacy: ('storage', type, key, location, numel, view_metadata); zip: the first five.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError("persistent id does not name a storage type")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, np.dtype(storage_type.dtype).newbyteorder("<"), int(numel))
        return self._storages[key]


def _restricted_load(file, storages: dict[str, _Storage]):
    return _RestrictedUnpickler(file, storages).load()


def _read_legacy(file) -> tuple[object, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    if _restricted_load(file, storages) != LEGACY_MAGIC_NUMBER:
        raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
    if _restricted_load(file, storages) != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError("unsupported legacy checkpoint protocol version")
    sys_info = _restricted_load(file, storages)
    if not sys_info.get("little_endian", True):
        raise CheckpointError("big-endian checkpoints are not supported")
    result = _restricted_load(file, storages)
    for key in _restricted_load(file, storages):
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", file.read(8))
        nbytes = numel * storage.dtype.itemsize
        raw = file.read(nbytes)
        if numel != storage.numel or len(raw) != nbytes:
            raise CheckpointError(f"storage {key} is truncated")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return result, storages


def _read_zip(path: Path) -> tuple[object, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError("zip checkpoint must contain exactly one data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise CheckpointError("big-endian checkpoints are not supported")
        result = _restricted_load(io.BytesIO(archive.read(pickles[0])), storages)
        for storage in storages.values():
            raw = archive.read(f"{prefix}data/{storage.key}")
            if len(raw) < storage.numel * storage.dtype.itemsize:
                raise CheckpointError(f"storage {storage.key} is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype, count=storage.numel)
    return result, storages


def _resolve(obj):
    if isinstance(obj, _TensorRef):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return type(obj)((key, _resolve(value)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(value) for value in obj)
    return obj


def load_checkpoint(path: str | Path) -> object:
    """The checkpoint's pickled object with every tensor replaced by a numpy array."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            result, _ = _read_zip(path)
        else:
            with path.open("rb") as file:
                result, _ = _read_legacy(file)
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{path.name} is not a readable PyTorch checkpoint: {exc}") from exc
    return _resolve(result)
