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

One file, ``view.safetensors``, holds the storages and, in its header's metadata, the config and
the tensors' layouts; ``view.json`` holds the key and that file's sha256. The key is everything
that can change what ``extract`` returns: the GGUF file's sha256, the sha256 the weight cache
recorded for the weights the view was built from, the dtype, the source of :mod:`.adapters` and
:mod:`.arch`, and the torch and transformers versions. A missing cache or one of another key makes
:func:`load` return None; a file whose hash differs from the recorded one (it is hashed on every
load, as the weight cache is), an unreadable record, or a layout that does not fit its storages
raises :class:`CorruptViewCache`, and the loader says so on stderr. Either way the model is then
loaded through transformers and the view written again. Safetensors and JSON only, never pickles.
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
from .arch import ArchConfig, LayerWeights, Norm, Weights, flat_storage, storage_key, storage_spans

VIEW_FORMAT = 2
WEIGHTS_FILE = "view.safetensors"
META_FILE = "view.json"
_HEADER = "recallscope_view"  # the safetensors metadata entry holding the config and the layouts
_CLASSES = {cls.__name__: cls for cls in (Weights, LayerWeights, Norm)}
_CODE = (Path(__file__).with_name("adapters.py"), Path(__file__).with_name("arch.py"))


class CorruptViewCache(Exception):
    """A view cache of the right key that cannot be trusted (its file does not match the recorded
    sha256, its record is unreadable, or a layout does not fit): the caller rebuilds it and says so."""


def cache_key(gguf_sha256: str, dtype: torch.dtype, weights_sha256: str | None = None) -> dict:
    """What the cached view depends on; a cache whose recorded key differs is not read.
    ``weights_sha256``: the weight cache's recorded hash of the file the view is built from."""
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
        "weights_sha256": weights_sha256,
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
    names = {k: f"s{i}" for i, k in enumerate(spans)}
    flats = {}
    for t in tensors:
        k = storage_key(t)
        if names[k] not in flats:
            lo, hi = spans[k]
            # a view of the span, not a copy: the weights are saved beside the model in memory,
            # and a copy of all of them would add the model's size to the load's peak
            flats[names[k]] = flat_storage(t)[lo:hi].detach().cpu()

    def encode(obj):
        if isinstance(obj, Tensor):
            k = storage_key(obj)
            return {"tensor": {"storage": names[k], "size": list(obj.shape), "stride": list(obj.stride()),
                               "offset": obj.storage_offset() - spans[k][0]}}
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
        header = json.dumps({"cfg": dataclasses.asdict(cfg), "weights": encode(weights), "tokenizer_class": tokenizer_class})
    except TypeError:
        return False
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".view-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(flats, tmp, metadata={_HEADER: header})
        os.chmod(tmp, _file_mode())
        record = {"key": key, "sha256": gguf.sha256_of([Path(tmp)])}
        os.replace(tmp, directory / WEIGHTS_FILE)
        _atomic_text(directory / META_FILE, json.dumps(record))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def written_for(directory: Path, key: dict) -> bool:
    """Whether the cache holds a valid view recorded for ``key``: the record names ``key`` and the
    file matches the record's sha256 (a truncated or altered file, found corrupt by :func:`load`,
    is not a view already written and is rewritten by the caller)."""
    try:
        record = json.loads((directory / META_FILE).read_text())
        weights_path = directory / WEIGHTS_FILE
        return (
            isinstance(record, dict)
            and record.get("key") == key
            and weights_path.is_file()
            and gguf.sha256_of([weights_path]) == record.get("sha256")
        )
    except (OSError, ValueError):
        return False


def load(directory: Path, key: dict, device: torch.device) -> tuple[ArchConfig, Weights, str] | None:
    """``(cfg, weights, tokenizer_class)`` from the cache on ``device``; None when there is none for
    ``key`` (absent, or written for another key: another dtype, weights, code or version). Raises
    :class:`CorruptViewCache` when the record is unreadable, the file's sha256 differs from the
    recorded one (a truncated or altered file), or its layouts do not fit its storages."""
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    if not (meta_path.is_file() and weights_path.is_file()):
        return None
    try:
        record = json.loads(meta_path.read_text())
        recorded_key, recorded_sha = record["key"], record["sha256"]
    except (ValueError, TypeError, KeyError):
        raise CorruptViewCache(f"{meta_path} is not a view record") from None
    if recorded_key != key:
        return None
    if gguf.sha256_of([weights_path]) != recorded_sha:
        raise CorruptViewCache(f"{weights_path} does not match its recorded sha256")
    # The file matches its hash, so what follows can only fail on a file written by another
    # recallscope that shares this key: refused the same way rather than half-loaded.
    try:
        return _read(weights_path, device)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as exc:
        raise CorruptViewCache(f"{weights_path} does not describe a view ({type(exc).__name__}: {exc})") from None


def _read(path: Path, device: torch.device) -> tuple[ArchConfig, Weights, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        header = json.loads(handle.metadata()[_HEADER])
        flats = {}
        for name in handle.keys():
            # fresh storages that torch allocates (as arch.materialize makes them on the other route:
            # the same placement, so the same bits), filled one at a time: the load's peak is the model
            # plus its largest storage, not twice the model
            stored = handle.get_tensor(name)
            flats[name] = torch.empty(stored.shape, dtype=stored.dtype, device=device).copy_(stored)
            del stored

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

    fields = dict(header["cfg"])
    fields["sliding_window"] = tuple(fields.get("sliding_window") or ())
    return ArchConfig(**fields), decode(header["weights"]), header["tokenizer_class"]


def _file_mode() -> int:
    """The mode a plain new file gets under this process's umask (mkstemp makes 0600); the umask
    is read from /proc where it is shown (setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
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
