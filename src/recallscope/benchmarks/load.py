"""Cached load vs GGUF de-quantisation of the embedded model."""

from __future__ import annotations

import tempfile
import time
from typing import Iterator

from ..models.loading import EMBEDDED, load_embedded


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
        finally:
            if old is None:
                os.environ.pop("RECALLSCOPE_CACHE", None)
            else:
                os.environ["RECALLSCOPE_CACHE"] = old
    assert info["loaded_from"] == "cache"
    yield {
        "bench": "load_cache_vs_gguf",
        "model": options.model,
        "gguf_seconds": round(gguf_s, 3),
        "cache_seconds": round(cache_s, 3),
        "ratio": round(gguf_s / cache_s, 1),
    }
