import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

LRE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lre"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded model, loaded once per test session (from the safetensors cache)."""
    from recallscope import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def lre_dir() -> Path:
    assert LRE_DIR.is_dir(), f"the LRE relation files are expected at {LRE_DIR}"
    return LRE_DIR
