"""The view cache (recallscope.models.viewcache): the loaded view is the extracted one, bit for bit
and stride for stride, and a cache that does not match its key or its hash is not read."""

import dataclasses
import json

import pytest
import torch

from recallscope.models import gguf, viewcache
from recallscope.models.adapters import extract
from recallscope.models.loading import EMBEDDED, load_embedded, load_embedded_view, load_model
from recallscope.models.view import ModelView
from tests.helpers.tiny import CONFIGS, left_pad, random_prompts, tiny_model

KEY = viewcache.cache_key("0" * 64, torch.float32)


def _sharing(weights) -> list[tuple[int, int]]:
    """Pairs of tensor indices that read the same storage."""
    ptrs = [t.untyped_storage().data_ptr() for t in weights.tensors()]
    return [(i, j) for i in range(len(ptrs)) for j in range(i + 1, len(ptrs)) if ptrs[i] == ptrs[j]]


def assert_same_view(a, b):
    (cfg_a, w_a), (cfg_b, w_b) = a, b
    assert cfg_a == cfg_b
    ta, tb = list(w_a.tensors()), list(w_b.tensors())
    assert len(ta) == len(tb) > 0
    for x, y in zip(ta, tb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and x.stride() == y.stride()
        assert torch.equal(x, y)
    assert _sharing(w_a) == _sharing(w_b)  # ties (W_U = W_E^T) and shared parameters survive


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_a_saved_view_loads_bit_for_bit_with_its_strides(family, tmp_path):
    cfg, weights = extract(tiny_model(family))
    assert viewcache.save(tmp_path, KEY, cfg, weights, "TokenizersBackend")
    loaded_cfg, loaded, tokenizer_class = viewcache.load(tmp_path, KEY, torch.device("cpu"))
    assert tokenizer_class == "TokenizersBackend"
    assert_same_view((cfg, weights), (loaded_cfg, loaded))
    ids, mask = left_pad(random_prompts(3))
    a = ModelView(cfg, weights).trace(ids, mask, record=["logits", "resid_pre"])
    b = ModelView(loaded_cfg, loaded).trace(ids, mask, record=["logits", "resid_pre"])
    assert torch.equal(a.logits, b.logits) and torch.equal(a.resid_pre, b.resid_pre)  # the same bits


def test_a_view_cache_is_read_only_for_its_key_and_its_bytes(tmp_path):
    cfg, weights = extract(tiny_model("llama_gqa"))
    assert viewcache.save(tmp_path, KEY, cfg, weights, "TokenizersBackend")
    cpu = torch.device("cpu")
    assert viewcache.load(tmp_path, KEY, cpu) is not None
    for change in ({"dtype": "float64"}, {"code_sha256": "x"}, {"torch": "0.0"}, {"gguf_sha256": "1" * 64}, {"weights_sha256": "2" * 64}):
        assert viewcache.load(tmp_path, {**KEY, **change}, cpu) is None, change
    path = tmp_path / viewcache.WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of one weight: same size, another hash
    path.write_bytes(bytes(data))
    with pytest.raises(viewcache.CorruptViewCache, match="does not match its recorded sha256"):
        viewcache.load(tmp_path, KEY, cpu)
    assert viewcache.load(tmp_path, {**KEY, "dtype": "float64"}, cpu) is None  # another key: not read, not hashed
    for record in ("{not json", "[]", '{"key": 1}'):
        (tmp_path / viewcache.META_FILE).write_text(record)
        with pytest.raises(viewcache.CorruptViewCache, match="is not a view record"):
            viewcache.load(tmp_path, KEY, cpu)
    assert viewcache.load(tmp_path / "absent", KEY, cpu) is None
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert json.loads(json.dumps(KEY)) == KEY  # the key is plain JSON


def test_a_layout_that_does_not_fit_its_storage_is_refused_not_half_loaded(tmp_path):
    """The layouts live in the hashed file's header; one written wrong (an offset past its storage)
    under the right key and hash is refused as corrupt, never loaded as something else."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    cfg, weights = extract(tiny_model("llama_gqa"))
    assert viewcache.save(tmp_path, KEY, cfg, weights, "TokenizersBackend")
    path = tmp_path / viewcache.WEIGHTS_FILE
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()[viewcache._HEADER])
        flats = {name: handle.get_tensor(name) for name in handle.keys()}
    header["weights"]["fields"]["W_E"]["tensor"]["offset"] = 10**9
    save_file(flats, str(path), metadata={viewcache._HEADER: json.dumps(header)})
    record = json.loads((tmp_path / viewcache.META_FILE).read_text())
    record["sha256"] = gguf.sha256_of([path])
    (tmp_path / viewcache.META_FILE).write_text(json.dumps(record))
    with pytest.raises(viewcache.CorruptViewCache, match="does not describe a view"):
        viewcache.load(tmp_path, KEY, torch.device("cpu"))


def test_the_view_record_holds_only_the_key_and_the_hash(tmp_path):
    """Everything the loaded view is made of (config, layouts) is inside the hashed file."""
    cfg, weights = extract(tiny_model("gpt2"))
    assert viewcache.save(tmp_path, KEY, cfg, weights, "TokenizersBackend")
    assert set(json.loads((tmp_path / viewcache.META_FILE).read_text())) == {"key", "sha256"}


def test_empty_tensors_are_storages_of_their_own():
    from recallscope.models.arch import storage_spans

    a, b = torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    assert len(storage_spans([a, b])) == 2  # both may have data pointer 0; no "two dtypes" error


def test_the_key_follows_the_adapter_source(monkeypatch, tmp_path):
    fake = tmp_path / "adapters.py"
    fake.write_text("# another adapter\n")
    monkeypatch.setattr(viewcache, "_CODE", (fake, viewcache._CODE[1]))
    assert viewcache.cache_key("0" * 64, torch.float32)["code_sha256"] != KEY["code_sha256"]


@pytest.mark.slow
def test_smollm2_from_the_view_cache_is_the_extracted_model(smollm2, lre_dir):
    """The embedded model read from its view cache equals the one extracted from transformers'
    model (every tensor, stride and tie), and its tokenizer encodes every prompt identically."""
    from recallscope.tasks import build_prompts, load_relation

    load_model("smollm2-135m")  # makes sure the view cache exists (the first load writes it)
    cpu = torch.device("cpu")
    fast = load_embedded_view("smollm2-135m", torch.float32, cpu)
    assert fast is not None
    cfg, weights, tokenizer, info = fast
    assert info["loaded_from"] == "view cache"
    hf, hf_tokenizer, _ = load_embedded("smollm2-135m", torch.float32)
    hf.requires_grad_(False)
    assert_same_view(extract(hf), (cfg, weights))
    assert weights.W_U.untyped_storage().data_ptr() == weights.W_E.untyped_storage().data_ptr()  # tied, as in the model
    assert type(tokenizer) is type(hf_tokenizer)
    relation = load_relation("country_capital_extended")
    texts = [p.text for p in build_prompts(relation, hf_tokenizer, shots=3, seed=0).prompts] + [" " + s.object for s in relation.samples]
    texts += ["<script>alert(1)</script>", "Côte d'Ivoire", "  two  spaces"]
    for text in texts:
        for special in (True, False):
            assert tokenizer(text, add_special_tokens=special, return_offsets_mapping=True) == hf_tokenizer(
                text, add_special_tokens=special, return_offsets_mapping=True), text
    ids = hf_tokenizer(texts[0])["input_ids"]
    assert tokenizer.decode(ids) == hf_tokenizer.decode(ids)
    assert tokenizer.convert_ids_to_tokens(ids) == hf_tokenizer.convert_ids_to_tokens(ids)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (
        hf_tokenizer.pad_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.bos_token_id)
    directory = gguf.cache_dir(EMBEDDED["smollm2-135m"])
    mode = (directory / "tokenizer.json").stat().st_mode & 0o777
    assert all((directory / name).stat().st_mode & 0o777 == mode for name in (viewcache.WEIGHTS_FILE, viewcache.META_FILE))


@pytest.mark.slow
def test_a_model_from_the_view_cache_builds_its_hf_module_on_demand(smollm2):
    model = load_model("smollm2-135m")
    assert model.info["loaded_from"] == "view cache" and model.hf is None
    ids = torch.tensor([model.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        hf_logits = model.hf_model(ids).logits[0, -1]
    view_logits = model.view.trace(ids, record=["logits"]).logits[0, -1]
    assert model.hf is not None and float((hf_logits - view_logits).abs().max()) < 1e-4
    bare = dataclasses.replace(model, hf=None, hf_loader=None)
    with pytest.raises(ValueError, match="no Hugging Face module"):
        bare.hf_model


@pytest.mark.parametrize("family", ["gpt2", "llama_gqa", "gemma3_text"])
def test_converting_the_weights_keeps_tied_and_shared_storages(family):
    """Weights.to converts storage by storage: a tied unembedding stays one storage in float64
    (converting tensor by tensor doubled it), with the values of a per-tensor .to() and the
    originals' strides (GPT-2's W_Q/W_K/W_V stay views of one fused c_attn)."""
    _, weights = extract(tiny_model(family))
    wide = weights.to(dtype=torch.float64)
    assert _sharing(wide) == _sharing(weights)
    for a, b in zip(weights.tensors(), wide.tensors(), strict=True):
        assert b.dtype == torch.float64 and b.stride() == a.stride() and torch.equal(b, a.to(torch.float64))
    ptrs = {t.untyped_storage().data_ptr() for t in wide.tensors()}
    assert len(ptrs) == len({t.untyped_storage().data_ptr() for t in weights.tensors()})
    same = weights.to(dtype=torch.float32)  # nothing to convert: the same tensors
    assert all(a is b for a, b in zip(weights.tensors(), same.tensors(), strict=True))


@pytest.mark.slow
def test_a_corrupt_view_cache_is_rebuilt_and_says_so(smollm2, tmp_path, monkeypatch, capfd):
    import shutil

    load_model("smollm2-135m")  # the view cache exists
    original = gguf.cache_dir(EMBEDDED["smollm2-135m"])
    monkeypatch.setenv("RECALLSCOPE_CACHE", str(tmp_path))
    copy = gguf.cache_dir(EMBEDDED["smollm2-135m"])
    shutil.copytree(original, copy)
    with open(copy / viewcache.WEIGHTS_FILE, "r+b") as handle:  # truncated: a half-written file
        handle.truncate(1000)
    capfd.readouterr()
    model = load_model("smollm2-135m")
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "the view cache failed its check" in err and "rebuilding it" in err
    assert model.info["loaded_from"] == "cache"  # through the weight cache, which is intact
    again = load_model("smollm2-135m")
    assert again.info["loaded_from"] == "view cache" and capfd.readouterr().err == ""  # rewritten by the load before
    ids = torch.tensor([model.tokenizer("The capital of France is")["input_ids"]])
    assert torch.equal(model.view.trace(ids, record=["logits"]).logits, again.view.trace(ids, record=["logits"]).logits)
