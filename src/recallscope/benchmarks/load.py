"""Cached load vs GGUF de-quantisation of the embedded model, and the view cache
(:mod:`..models.viewcache`) vs the weight cache: ``cache_seconds`` builds the Hugging Face model
from the safetensors cache, ``view_cache_seconds`` is a whole ``load_model`` that reads the cached
view instead. transformers is already imported in this process, so neither figure holds the ~5 s
its imports cost a fresh command (``recallscope bench run`` measures that)."""

from __future__ import annotations

import tempfile
import time
from typing import Iterator

from ..models.loading import EMBEDDED, load_embedded, load_model


def run(options) -> Iterator[dict]:
    import os

    import torch

    if options.model not in EMBEDDED:
        yield {"bench": "load_cache_vs_gguf", "ratio": None, "skipped": f"{options.model} is not an embedded GGUF model"}
        return
    old = os.environ.get("RECALLSCOPE_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RECALLSCOPE_CACHE"] = tmp
        try:
            start = time.perf_counter()
            load_embedded(options.model, torch.float32, use_cache=True)  # converts and writes the cache
            gguf_s = time.perf_counter() - start
            start = time.perf_counter()
            _, _, info = load_embedded(options.model, torch.float32, use_cache=True)
            cache_s = time.perf_counter() - start
            load_model(options.model)  # through the weight cache; writes the view cache
            start = time.perf_counter()
            viewed = load_model(options.model)
            view_s = time.perf_counter() - start
        finally:
            if old is None:
                os.environ.pop("RECALLSCOPE_CACHE", None)
            else:
                os.environ["RECALLSCOPE_CACHE"] = old
    assert info["loaded_from"] == "cache" and viewed.info["loaded_from"] == "view cache"
    yield {
        "bench": "load_cache_vs_gguf",
        "model": options.model,
        "gguf_seconds": round(gguf_s, 3),
        "cache_seconds": round(cache_s, 3),
        "view_cache_seconds": round(view_s, 3),
        "ratio": round(gguf_s / cache_s, 1),
        "view_ratio": round(cache_s / view_s, 1),
    }
