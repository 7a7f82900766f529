"""An embedded model's view — its :class:`~.arch.ArchConfig` and :class:`~.arch.Weights` — cached
beside the de-quantised weights, so that a later load needs neither transformers' model classes
nor the ~5 s their imports take on two CPU cores.

The first load of an embedded model goes through transformers (:func:`.loading.load_embedded`)
and :func:`.adapters.extract`; :func:`save` then writes what ``extract`` returned. The weights'
*memory layout* is kept, not only their values: ``extract`` hands out views of the Hugging Face
parameters (``W_Q`` a reshaped, transposed view of ``q_proj.weight``; a tied ``W_U`` the transpose
of ``W_E``), and a matrix product of a transposed view and of a contiguous copy may round
differently. So every storage the views share is saved once (the span its views cover) and each
tensor is rebuilt with its own size, stride and offset into it (``torch.as_strided``): the loaded
view is the extracted one, bit for bit and stride for stride (tests/models/test_viewcache.py).

The cache is keyed by everything that can change what ``extract`` returns: the GGUF file's
sha256, the dtype, the source of :mod:`.adapters` and :mod:`.arch`, and the torch and transformers
versions. A key that differs, a missing file, or a hash that does not match (the file is hashed
on every load, as the weight cache is) makes :func:`load` return None and the caller rebuilds
through transformers. Safetensors and JSON only, never pickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

import torch
from torch import Tensor

from . import gguf
from .arch import ArchConfig, LayerWeights, Norm, Weights, flat_storage, storage_spans

VIEW_FORMAT = 1
WEIGHTS_FILE = "view.safetensors"
META_FILE = "view.json"
_CLASSES = {cls.__name__: cls for cls in (Weights, LayerWeights, Norm)}
_CODE = (Path(__file__).with_name("adapters.py"), Path(__file__).with_name("arch.py"))


def cache_key(gguf_sha256: str, dtype: torch.dtype) -> dict:
    """What the cached view depends on; a cache whose recorded key differs is not read."""
    code = hashlib.sha256()
    for path in _CODE:
        code.update(path.read_bytes())
    try:
        transformers_version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        transformers_version = None
    return {
        "format": VIEW_FORMAT,
        "gguf_sha256": gguf_sha256,
        "dtype": str(dtype).replace("torch.", ""),
        "code_sha256": code.hexdigest(),
        "torch": torch.__version__,
        "transformers": transformers_version,
    }


def save(directory: Path, key: dict, cfg: ArchConfig, weights: Weights, tokenizer_class: str) -> bool:
    """Write the view into ``directory`` atomically; False (nothing written) when a storage is read
    as several dtypes, or the tree holds something other than tensors, numbers, strings and None."""
    tensors = list(weights.tensors())
    try:
        spans = storage_spans(tensors)
    except ValueError:
        return False
    names = {ptr: f"s{i}" for i, ptr in enumerate(spans)}
    flats = {}
    for t in tensors:
        ptr = t.untyped_storage().data_ptr()
        if names[ptr] not in flats:
            lo, hi = spans[ptr]
            flats[names[ptr]] = flat_storage(t)[lo:hi].detach().cpu().clone()

    def encode(obj):
        if isinstance(obj, Tensor):
            ptr = obj.untyped_storage().data_ptr()
            return {"tensor": {"storage": names[ptr], "size": list(obj.shape), "stride": list(obj.stride()),
                               "offset": obj.storage_offset() - spans[ptr][0]}}
        if dataclasses.is_dataclass(obj) and type(obj).__name__ in _CLASSES:
            return {"class": type(obj).__name__, "fields": {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
        if isinstance(obj, list):
            return {"list": [encode(v) for v in obj]}
        if isinstance(obj, dict):
            return {"dict": {str(k): encode(v) for k, v in obj.items()}}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return {"value": obj}
        raise TypeError(f"viewcache: cannot store a {type(obj).__name__}")

    try:
        tree = encode(weights)
    except TypeError:
        return False
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".view-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(flats, tmp)
        os.chmod(tmp, _file_mode())
        meta = {
            "key": key,
            "sha256": gguf.sha256_of([Path(tmp)]),
            "cfg": dataclasses.asdict(cfg),
            "weights": tree,
            "tokenizer_class": tokenizer_class,
        }
        os.replace(tmp, directory / WEIGHTS_FILE)
        _atomic_text(directory / META_FILE, json.dumps(meta))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def load(directory: Path, key: dict, device: torch.device) -> tuple[ArchConfig, Weights, str] | None:
    """``(cfg, weights, tokenizer_class)`` from the cache on ``device``, or None when there is no
    valid cache for ``key`` (absent, another key, or a file whose sha256 differs from the one recorded)."""
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    if not (meta_path.is_file() and weights_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return None
    if meta.get("key") != key or gguf.sha256_of([weights_path]) != meta.get("sha256"):
        return None
    from safetensors.torch import load_file

    flats = {name: t.to(device) for name, t in load_file(weights_path).items()}

    def decode(node):
        if "tensor" in node:
            spec = node["tensor"]
            return torch.as_strided(flats[spec["storage"]], spec["size"], spec["stride"], spec["offset"])
        if "class" in node:
            return _CLASSES[node["class"]](**{k: decode(v) for k, v in node["fields"].items()})
        if "list" in node:
            return [decode(v) for v in node["list"]]
        if "dict" in node:
            return {k: decode(v) for k, v in node["dict"].items()}
        return node["value"]

    fields = meta["cfg"]
    fields["sliding_window"] = tuple(fields.get("sliding_window") or ())
    return ArchConfig(**fields), decode(meta["weights"]), meta["tokenizer_class"]


def _file_mode() -> int:
    """The mode a plain new file gets under this process's umask (mkstemp makes 0600), as the
    weight cache's files beside it have."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.chmod(tmp, _file_mode())
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
