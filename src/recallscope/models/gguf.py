"""Models shipped as GGUF files inside PyPI wheels: find, verify, de-quantise, cache.

The wheel's Python module is never imported (its import pulls in llama.cpp bindings we do not
need); the file is found through the import system's search locations only. De-quantising with
``transformers`` + ``gguf`` takes ~20 s on two cores, so the result is cached once as
safetensors (never pickles) with a hash of every file, and later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..locks import FileLock

CACHE_FORMAT = 1
INDEX = "recallscope-cache.json"
REQUIRED = ("config.json", "model.safetensors")  # what a load of the cache reads, at least
BESIDE = ("view.safetensors", "view.json")  # the view cache (:mod:`.viewcache`), checked by its own record


@dataclass(frozen=True)
class GGUFSource:
    alias: str
    description: str
    # (module name inside the wheel, file name, sha256); several parts are concatenated in order
    parts: tuple[tuple[str, str], ...]
    sha256: str
    install: str
    licence: str


def cache_root() -> Path:
    root = os.environ.get("RECALLSCOPE_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recallscope"


def locate(source: GGUFSource) -> list[Path]:
    """Paths of the GGUF part files, without importing the wheels' modules."""
    paths = []
    for module, filename in source.parts:
        spec = importlib.util.find_spec(module)
        locations = list(spec.submodule_search_locations or []) if spec else []
        found = [Path(loc) / filename for loc in locations if (Path(loc) / filename).is_file()]
        if not found:
            raise UserError(
                f"model {source.alias!r} is not installed: {source.install}"
            )
        paths.append(found[0])
    return paths


def sha256_of(paths: list[Path], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def gguf_file(source: GGUFSource) -> Path:
    """One verified GGUF file (parts joined into the cache once, if there are several)."""
    paths = locate(source)
    if len(paths) == 1:
        path = paths[0]
    else:
        path = cache_root() / "gguf" / f"{source.alias}.gguf"
        if not path.is_file():
            tmp = None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
                    tmp = out.name
                    for part in paths:
                        with open(part, "rb") as handle:
                            shutil.copyfileobj(handle, out)
                os.replace(tmp, path)
            except OSError as exc:
                if tmp is not None and os.path.exists(tmp):
                    os.unlink(tmp)
                raise UserError(
                    f"model {source.alias!r}: cannot join its GGUF parts into {path} ({exc.strerror or exc}); "
                    "set RECALLSCOPE_CACHE to a writable folder with room"
                ) from exc
    digest = sha256_of([path])
    if digest != source.sha256:
        raise UserError(
            f"model file {path} has sha256 {digest[:16]}…, expected {source.sha256[:16]}…; reinstall: {source.install}"
        )
    return path


def cache_dir(source: GGUFSource) -> Path:
    return cache_root() / "models" / f"{source.alias}-{source.sha256[:12]}-v{CACHE_FORMAT}"


def cache_is_valid(directory: Path, skip: tuple[str, ...] = ()) -> bool:
    """The cache is complete and every file matches the hash recorded when it was written
    (files named in ``skip`` are not hashed: a load that does not read them). The index must be
    an object whose ``files`` lists :data:`REQUIRED` and every other file of the folder (the view
    cache aside), each with an integer ``size`` and a hex ``sha256``; anything else is invalid."""
    files = _index_files(directory)
    if files is None:
        return False
    for name, entry in files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return False
        if name not in skip and sha256_of([path]) != entry["sha256"]:
            return False
    return True


def _index_files(directory: Path) -> dict[str, dict] | None:
    """The index's ``files`` when the index is well formed and covers the folder; else None."""
    try:
        data = json.loads((directory / INDEX).read_text(encoding="utf-8"))
        present = {p.name for p in directory.iterdir() if not p.name.startswith(".")}
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(r in files for r in REQUIRED):
        return None
    for name, entry in files.items():
        if (
            not isinstance(name, str)
            or "/" in name
            or name in (INDEX, "", ".", "..")
            or not isinstance(entry, dict)
            or isinstance(entry.get("size"), bool)
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
            or len(entry["sha256"]) != 64
        ):
            return None
    if present - set(files) - {INDEX, *BESIDE}:
        return None  # a file the index does not vouch for (a load might read it)
    return files


def recorded_sha256(directory: Path, name: str) -> str | None:
    """The sha256 the cache recorded for its file ``name`` when it was written (None: not recorded)."""
    try:
        files = _index_files(directory)
        return files[name]["sha256"] if files is not None and name in files else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cache_lock(directory: Path, exclusive: bool) -> FileLock | None:
    """The lock of one cache entry (``.<entry>.lock`` beside its folder), taken: shared to read it,
    exclusive to write it; another process's hold is waited for (a note on stderr). None when the
    lock file cannot be made (a read-only cache, which nobody can be writing)."""
    lock = FileLock(directory.parent / f".{directory.name}.lock", f"the model cache {directory}")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(exclusive=exclusive, wait=True, on_wait=lambda line: print(f"recallscope: {line}", file=sys.stderr))
    except (OSError, UserError):
        return None
    return lock


def write_cache(source: GGUFSource, model, tokenizer) -> Path:
    """Save the de-quantised model as safetensors, atomically: built in a temporary folder, then
    renamed into place (the caller holds the entry's exclusive lock, :func:`cache_lock`). OSError
    when the cache cannot be written (read-only, full)."""
    final = cache_dir(source)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        # The de-quantised model still carries its GGUF quantisation config and quantizer;
        # save_pretrained refuses it until both are dropped.
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if hasattr(model, "is_quantized"):
            try:
                model.is_quantized = False
            except AttributeError:
                pass
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = {
            p.name: {"size": p.stat().st_size, "sha256": sha256_of([p])}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        (tmp / INDEX).write_text(json.dumps({"alias": source.alias, "gguf_sha256": source.sha256, "files": files}, indent=1))
        if final.exists():  # an invalid cache: moved aside first (a folder cannot be renamed onto a full one)
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-old-"))
            os.replace(final, old / "entry")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
