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
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

CACHE_FORMAT = 1


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
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as out:
                for part in paths:
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, out)
            os.replace(out.name, path)
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
    (files named in ``skip`` are not checked: a load that does not read them)."""
    manifest = directory / "recallscope-cache.json"
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    for name, entry in recorded.items():
        if name in skip:
            continue
        path = directory / name
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return False
        if sha256_of([path]) != entry["sha256"]:
            return False
    return True


def recorded_sha256(directory: Path, name: str) -> str | None:
    """The sha256 the cache recorded for its file ``name`` when it was written (None: not recorded)."""
    try:
        return json.loads((directory / "recallscope-cache.json").read_text())["files"][name]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cache(source: GGUFSource, model, tokenizer) -> Path:
    """Save the de-quantised model as safetensors, atomically (a temp dir renamed into place)."""
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
        (tmp / "recallscope-cache.json").write_text(
            json.dumps({"alias": source.alias, "gguf_sha256": source.sha256, "files": files}, indent=1)
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
