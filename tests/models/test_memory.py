"""Models already in memory: a transformers module, an nnsight LanguageModel, a TransformerLens
TransformerBridge (both from PyPI, in the test extra) — read without a copy, checked against their
own forward, hashed by their weights; a HookedTransformer and a wrapper that computes something
else are refused in one line."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import recallscope as rs
from helpers.small import SMALL_SETTINGS
from helpers.tiny import CONFIGS, PAD, VOCAB, random_prompts, tiny_model
from recallscope import pipeline
from recallscope.models import controls, loading, memory

FAMILIES = sorted(name for name in CONFIGS if name != "gemma3_multimodal")
RELATION = "paper_country_capital"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny models' 211 ids (the probe's words are unknown: id 3)."""
    vocab = {f"w{i}": i for i in range(VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w3"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="w3", pad_token="w0", eos_token="w2")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_in_memory_equals_its_own_forward(name, identities):
    """The in-memory path reads the module as a load from disk does: the same identities (a)–(e), per family."""
    measure, check = identities
    hf = tiny_model(name)
    model = rs.load_model(hf, tiny_tokenizer())
    assert model.source == "memory" and model.hf is hf and model.view.dtype == torch.float32
    # the view reads the module's parameters, not a copy of them
    assert model.view.weights.W_E.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
    check(measure(model.view, hf, random_prompts(seed=1), pad_id=PAD))
    assert model.info["parity_max_rel_diff"] <= 1e-5


def test_a_half_precision_module_is_read_in_its_dtype():
    hf = tiny_model("llama_gqa").to(torch.bfloat16)
    model = rs.load_model(hf, tiny_tokenizer(), device="cpu", dtype="bfloat16")
    assert model.view.dtype == torch.bfloat16 and model.view.weights.W_E.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
    assert model.info["parity_max_rel_diff"] <= loading.PARITY_TOLERANCE[torch.bfloat16]
    assert rs.load_model(hf.float(), tiny_tokenizer()).model_hash != model.model_hash  # another dtype, other weights


def test_the_hash_is_the_weights_one_ulp_apart_is_another_model():
    hf = tiny_model("llama_gqa")
    base = rs.load_model(hf, tiny_tokenizer())
    again = rs.load_model(copy.deepcopy(hf), tiny_tokenizer())
    assert base.model_hash == again.model_hash and base.model_hash.startswith("weights:sha256:")
    with torch.no_grad():
        w = hf.model.layers[1].mlp.down_proj.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf")))
    assert rs.load_model(hf, tiny_tokenizer()).model_hash != base.model_hash


def test_the_users_tokenizer_and_module_are_left_as_they_were():
    hf = tiny_model("gpt2").train()
    tok = tiny_tokenizer()
    tok.padding_side = "right"
    model = rs.load_model(hf, tok)
    assert tok.padding_side == "right" and model.tokenizer.padding_side == "left" and model.tokenizer is not tok
    assert hf.training and all(p.requires_grad for p in hf.parameters())  # still trainable, still in train mode
    assert not model.view.weights.W_E.requires_grad


def test_a_module_on_another_device_or_dtype_than_asked_is_refused():
    hf = tiny_model("gpt2")
    with pytest.raises(rs.UserError, match=r"weights are torch.float32, not float64; convert it first"):
        rs.load_model(hf, tiny_tokenizer(), dtype="float64")
    with pytest.raises(rs.UserError, match=r"needs its tokenizer"):
        rs.load_model(hf)
    with pytest.raises(rs.UserError, match=r"expected a model name or path"):
        rs.load_model(torch.nn.Linear(2, 2), tiny_tokenizer())


def test_a_hooked_transformer_is_refused_in_one_line_saying_how_to_get_a_module():
    # TransformerLens 4 (the test extra's, for TransformerBridge) removed HookedTransformer
    # (transformer_lens.HookedTransformer raises ImportError); TransformerLens 2.18 cannot be installed
    # beside it (one distribution; pip would also take transformers to 4.57 and numpy to 1.26). An object
    # of that class from an older TransformerLens is recognised by its class: a real TransformerLens 2.18
    # HookedTransformer gets this same line (checked once from a separate --target folder).
    older = type("HookedTransformer", (torch.nn.Module,), {"__module__": "transformer_lens.HookedTransformer"})()
    with pytest.raises(rs.UserError) as err:
        rs.load_model(older)
    message = str(err.value)
    assert "\n" not in message and "AutoModelForCausalLM.from_pretrained" in message and "TransformerBridge" in message


def test_a_bridge_with_transformer_lens_processed_weights_is_refused_unprocessed_is_the_module():
    """TransformerLens 4's HookedTransformer numerics (enable_compatibility_mode(): LayerNorm folded,
    unembedding centred, written into the wrapped module) are refused in one line; with
    no_processing=True the bridge reads as its module, bit for bit (the same weights hash)."""
    from transformer_lens.model_bridge import TransformerBridge

    hf, tok, _ = controls.build("planted", torch.float32, loading.EMBEDDED["smollm2-135m"])
    base = rs.load_model(copy.deepcopy(hf), tok).model_hash
    processed = TransformerBridge.boot_transformers("planted", hf_model=copy.deepcopy(hf), tokenizer=tok, device="cpu")
    processed.enable_compatibility_mode(disable_warnings=True)
    with pytest.raises(rs.UserError) as err:
        rs.load_model(processed, tok)
    assert str(err.value) == memory.PROCESSED_BRIDGE_REFUSAL and "\n" not in str(err.value)
    assert "no_processing=True" in str(err.value) and "AutoModelForCausalLM.from_pretrained" in str(err.value)
    plain = TransformerBridge.boot_transformers("planted", hf_model=hf, tokenizer=tok, device="cpu")
    plain.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    model = rs.load_model(plain, tok)
    assert model.info["held_by"] == "transformer_lens" and model.model_hash == base
    assert model.info["parity_max_rel_diff"] <= 1e-6


def test_a_wrapper_whose_forward_is_not_its_modules_is_refused():
    hf = tiny_model("llama_gqa")
    hook = hf.lm_head.register_forward_hook(lambda _m, _i, out: 2 * out)  # a hook left on: logits doubled
    try:
        with pytest.raises(rs.UserError, match="away from its own forward"):
            rs.load_model(hf, tiny_tokenizer())
    finally:
        hook.remove()
    assert rs.load_model(hf, tiny_tokenizer()).info["parity_max_rel_diff"] <= 1e-6


def _tables(study) -> dict[str, pd.DataFrame]:
    """Every table of every stage of the stage table (each wrapper run runs them all)."""
    assert study.stages == list(pipeline.STAGES)
    return {f"{stage}/{name}": frame for stage in study.stages for name, frame in study[stage].tables().items()}


def _assert_same_tables(a, b):
    ta, tb = _tables(a), _tables(b)
    assert list(ta) == list(tb)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], obj=name)


@pytest.fixture(scope="module")
def planted_module():
    hf, tok, _ = controls.build("planted", torch.float32, loading.EMBEDDED["smollm2-135m"])
    return hf, tok


def test_nnsight_and_transformer_lens_wrappers_give_the_module_own_tables(planted_module):
    # both are in the test extra (pyproject.toml): a missing one fails here, never skips
    import nnsight
    import transformer_lens.model_bridge as bridge_module

    hf, tok = planted_module
    run = dict(relation=RELATION, stages=list(pipeline.STAGES), max_prompts=10, progress=False, settings=SMALL_SETTINGS)
    direct = rs.run(model=hf, tokenizer=tok, **run)
    wrapped = rs.run(model=nnsight.LanguageModel(hf, tokenizer=tok), **run)
    assert wrapped.model.info["held_by"] == "nnsight" and wrapped.model.model_hash == direct.model.model_hash
    _assert_same_tables(wrapped, direct)
    # the bridge rewires the module it wraps in place (its components hold the originals) and adds a zero unembedding bias
    bridge = bridge_module.TransformerBridge.boot_transformers("planted", hf_model=hf, tokenizer=tok, device="cpu")
    bridged = rs.run(model=bridge, tokenizer=tok, **run)
    assert bridged.model.info["held_by"] == "transformer_lens" and bridged.model.model_hash == direct.model.model_hash
    _assert_same_tables(bridged, direct)
    # with its own tokenizer (TransformerLens prepends BOS) the bridge is the module with that tokenizer
    assert bridge.tokenizer("x")["input_ids"][0] == bridge.tokenizer.bos_token_id != tok("x")["input_ids"][0]
    _assert_same_tables(rs.run(model=bridge, **run), rs.run(model=hf, tokenizer=bridge.tokenizer, **run))


def test_a_fine_tuned_tiny_copy_is_another_run(tmp_path):
    """A few SGD steps on the ``random`` control (SmolLM2's tokenizer; it knows no fact, so every
    prompt is kept): another hash, refused as the base's run directory, other patching effects.
    The real-model case (smollm2-135m) is tests/test_api_smollm2.py."""
    hf, tok, _ = controls.build("random", torch.float32, loading.EMBEDDED["smollm2-135m"])
    tuned = copy.deepcopy(hf).requires_grad_(True)
    optimiser = torch.optim.SGD(tuned.parameters(), lr=1e-3)
    ids = torch.as_tensor([tok("The capital of France is Paris")["input_ids"]])
    for _ in range(3):
        tuned(input_ids=ids, labels=ids).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    run = dict(relation=RELATION, stages=["patch"], max_prompts=6, progress=False, settings={"recall.known_top_k": 49152})
    base = rs.run(model=hf, tokenizer=tok, out=str(tmp_path / "run"), **run)
    with pytest.raises(rs.UserError, match=r"holds a run with a different configuration \(model_hash"):
        rs.run(model=tuned, tokenizer=tok, out=str(tmp_path / "run"), **run)  # never resumed as the base
    other = rs.run(model=tuned, tokenizer=tok, **run)
    assert other.model.model_hash != base.model.model_hash
    a, b = base["patch"].tables()["components"], other["patch"].tables()["components"]
    assert (a["effect"] - b["effect"]).abs().max() > 1e-3


def test_parity_is_measured_against_the_wrapper_forward(planted_module):
    hf, tok = planted_module
    model = rs.load_model(hf, tok)

    class Bridge:  # a TransformerLens object: parity calls the object itself (its own forward), not its module
        __module__ = "transformer_lens.model_bridge"

        def __init__(self, scale):
            self.calls, self.scale = 0, scale

        def __call__(self, ids):
            self.calls += 1
            return self.scale * hf(input_ids=ids).logits

    same, other = Bridge(1.0), Bridge(2.0)
    assert memory.parity(same, hf, model.view, model.tokenizer) <= 1e-6 and same.calls == 1
    assert memory.parity(other, hf, model.view, model.tokenizer) == pytest.approx(0.5, rel=1e-4)
