"""Stage patch: the exact engine equals the naive one-forward-per-component loop, on a tiny
model of every family and on smollm2-135m; patching a component with its own value changes
nothing; attribution patching is the first-order term of the exact effect; bad input is one line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.tiny import PAD, VOCAB, left_pad, random_prompts, tiny_model
from helpers.tolerance import logit_difference_bound, mean_difference_bound
from recallscope import patch as P
from recallscope.cli import main
from recallscope.errors import UserError
from recallscope.figures import patch as patch_figures
from recallscope.models.adapters import extract
from recallscope.lens import recall_metric
from recallscope.models.view import ModelView
from recallscope.stats import spearman
from recallscope.tasks import build_prompts, load_relation

FAMILIES = ["gpt2", "opt", "gpt_neox_parallel", "gpt_neox_sequential", "llama_gqa", "gemma3_text", "gemma3_text_softcap_bias"]


def tiny_setup(name: str, n_corrupt: int = 3):
    """A tiny random model (float64: the comparisons measure the algorithm, not rounding), a
    left-padded batch and corruptions that change two middle tokens."""
    cfg, weights = extract(tiny_model(name))
    view = ModelView(cfg, weights.to(dtype=torch.float64))
    prompts = random_prompts(seed=1)
    ids, mask = left_pad(prompts, PAD)
    answers = torch.tensor([5, 17, 42])
    corrupt, weight = _corruptions(ids, n_corrupt)
    base = P.record_run(view, ids, mask, answers, prefix=True)
    return view, base, corrupt, weight


def _corruptions(ids: torch.Tensor, n_corrupt: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, n, S] copies of the rows with two middle tokens redrawn, and equal weights [B, n]."""
    B, S = ids.shape
    gen = torch.Generator().manual_seed(7)
    corrupt = ids[:, None].repeat(1, n_corrupt, 1)
    corrupt[:, :, S - 4 : S - 2] = torch.randint(3, VOCAB - 3, (B, n_corrupt, 2), generator=gen)
    return corrupt, torch.full((B, n_corrupt), 1.0 / n_corrupt, dtype=torch.float64)


def effects(pi: torch.Tensor, pi_clean: torch.Tensor) -> torch.Tensor:
    return 100.0 * (pi - pi_clean[:, None]) / pi_clean[:, None]


@pytest.mark.parametrize("name", FAMILIES)
def test_exact_engine_equals_naive_loop_on_tiny_models(name):
    view, base, corrupt, weight = tiny_setup(name)
    patch = P.corrupted_mean(view, base, corrupt, weight)
    # the suffix-cached corrupted runs equal full traced runs of each corruption, averaged
    full = [P.record_run(view, corrupt[:, j], base.attention_mask, base.answer_ids, prefix=False) for j in range(corrupt.shape[1])]
    for f in dataclasses.fields(P.RunRecord):
        mean = torch.stack([getattr(r, f.name) for r in full]).mean(0)
        assert (getattr(patch, f.name) - mean).abs().max().item() <= 1e-11 * max(1.0, mean.abs().max().item())
    comps = P.select_components(view.cfg, ["heads", "mlp", "resid"], None)
    pi_clean = P.recall_pi(view, base.record.resid_final[:, None], base.answer_ids)[:, 0]
    exact = P.exact_pi(view, base, patch, comps)
    naive = P.naive_pi(view, base, patch, comps)
    diff = (effects(exact, pi_clean) - effects(naive, pi_clean)).abs().max().item()
    assert diff <= 1e-11, diff  # points; float64 throughout (attention softmax included): rounding only (measured ≤ 7e-13)
    # and the patches matter (the test could fail)
    assert (exact - pi_clean[:, None]).abs().max().item() > 1e-2


def _output_projection(model, layer: int) -> torch.nn.Module:
    """The module whose input is the concatenated z of every head (Hugging Face's names)."""
    names = {"gpt2": "transformer.h.{}.attn.c_proj", "opt": "model.decoder.layers.{}.self_attn.out_proj",
             "gpt_neox": "gpt_neox.layers.{}.attention.dense"}
    return model.get_submodule(names.get(model.config.model_type, "model.layers.{}.self_attn.o_proj").format(layer))


@torch.no_grad()
def _hf_z_patch_pi(model, ids, mask, corrupt, weight, answers, layer: int, head: int, dh: int) -> torch.Tensor:
    """π(Y) [B] of the clean run with head ``head``'s z at the end position replaced by its weighted
    mean over the corruptions — plain transformers forward pre-hooks on the output projection.
    Each row runs alone, unpadded (float64 eager attention turns left padding into NaN)."""
    cols = slice(head * dh, (head + 1) * dh)
    proj = _output_projection(model, layer)
    out = []
    for row in range(ids.shape[0]):
        real = mask[row].bool()
        seen = []
        handle = proj.register_forward_pre_hook(lambda mod, args: seen.append(args[0][0, -1, cols].clone()))
        for j in range(corrupt.shape[1]):
            model(input_ids=corrupt[row, j][real][None])
        handle.remove()
        mean = sum(float(w) * z for w, z in zip(weight[row], seen, strict=True))

        def replace(mod, args):
            x = args[0].clone()
            x[0, -1, cols] = mean
            return (x,)

        handle = proj.register_forward_pre_hook(replace)
        logits = model(input_ids=ids[row][real][None]).logits[:, -1]
        handle.remove()
        out.append(recall_metric(logits, answers[row : row + 1])[0])
    return torch.stack(out)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_patched_head_is_the_model_with_the_heads_z_replaced(name):
    """Issue 16 C: exact and naive head patches equal the real intervention — the head's z
    replaced at the output projection's input, the rest of the model (Gemma's post-attention norm
    included) run as is — done with plain transformers hooks on the Hugging Face model."""
    model = tiny_model(name).double()
    cfg, weights = extract(model)
    view = ModelView(cfg, weights)
    ids, mask = left_pad(random_prompts(seed=1), PAD)
    answers = torch.tensor([5, 17, 42])
    corrupt, weight = _corruptions(ids)
    base = P.record_run(view, ids, mask, answers, prefix=True)
    patch = P.corrupted_mean(view, base, corrupt, weight)
    comps = P.select_components(cfg, ["heads"], None)
    pi_clean = P.recall_pi(view, base.record.resid_final[:, None], base.answer_ids)[:, 0]
    hf = torch.stack([_hf_z_patch_pi(model, ids, mask, corrupt, weight, answers, c.layer, c.head, cfg.d_head) for c in comps], 1)
    want = effects(hf, pi_clean)
    # The floor: Hugging Face's own float64 forward differs from the view's by rounding of its
    # float32 parts (rotary angles; OPT's, NeoX's float32 casts): the unpatched π, in points.
    floor = max(_hf_unpatched_pct(model, ids, mask, answers, pi_clean), 1e-10)
    for engine in (P.exact_pi, P.naive_pi):
        got = effects(engine(view, base, patch, comps), pi_clean)
        assert (got - want).abs().max().item() <= 1e3 * floor, (engine.__name__, (got - want).abs().max().item(), floor)
    assert (got - want).abs().max().item() <= 1e-3  # percentage points (the issue: up to 11.3 on Gemma before)
    assert want.abs().max().item() > 1.0  # the patches matter


@torch.no_grad()
def _hf_unpatched_pct(model, ids, mask, answers, pi_view) -> float:
    """max |100 (π_HF − π_view) / π_view| over the rows of the unpatched clean run, in points."""
    pi = torch.stack([
        recall_metric(model(input_ids=ids[row][mask[row].bool()][None]).logits[:, -1], answers[row : row + 1])[0]
        for row in range(ids.shape[0])
    ])
    return (100 * (pi - pi_view) / pi_view).abs().max().item()


@pytest.mark.parametrize("name", ["llama_gqa", "gpt_neox_parallel", "gemma3_text"])
def test_patching_a_component_with_its_own_value_changes_nothing(name):
    view, base, _, _ = tiny_setup(name)
    comps = P.select_components(view.cfg, ["heads", "mlp", "resid"], None)
    pi_clean = P.recall_pi(view, base.record.resid_final[:, None], base.answer_ids)[:, 0]
    for engine in (P.exact_pi, P.naive_pi, P.attribution_pi):
        pi = engine(view, base, base.record, comps)
        assert (pi - pi_clean[:, None]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["llama_gqa", "gpt2", "gemma3_text"])
def test_attribution_is_the_first_order_term_of_the_exact_effect(name):
    view, base, corrupt, weight = tiny_setup(name)
    far = P.corrupted_mean(view, base, corrupt, weight)
    eps = 1e-3
    near = P.RunRecord(*(
        getattr(base.record, f.name) + eps * (getattr(far, f.name) - getattr(base.record, f.name))
        for f in dataclasses.fields(P.RunRecord)
    ))
    comps = P.select_components(view.cfg, ["heads", "mlp", "resid"], None)
    pi_clean = P.recall_pi(view, base.record.resid_final[:, None], base.answer_ids)[:, 0]
    exact = P.exact_pi(view, base, near, comps) - pi_clean[:, None]
    approx = P.attribution_pi(view, base, near, comps) - pi_clean[:, None]
    scale = exact.abs().max().item()
    assert scale > 0
    assert (exact - approx).abs().max().item() <= 0.05 * scale


@pytest.mark.parametrize("name", ["llama_gqa", "gemma3_text"])
def test_half_precision_models_are_patched_in_float32(name):
    """Issue 16: in bfloat16 the engines disagreed by points; the engines compute in float32 from
    the bfloat16 weights, and then agree to float32 rounding."""
    cfg, weights = extract(tiny_model(name))
    bf16 = ModelView(cfg, weights.to(dtype=torch.bfloat16))
    view = P.engine_view(bf16)
    assert view.dtype == torch.float32 and P.engine_view(view) is view
    assert all(torch.equal(a.float(), b) for a, b in zip(bf16.weights.tensors(), view.weights.tensors(), strict=True))
    ids, mask = left_pad(random_prompts(seed=1), PAD)
    corrupt, weight = _corruptions(ids)
    base = P.record_run(view, ids, mask, torch.tensor([5, 17, 42]), prefix=True)
    patch = P.corrupted_mean(view, base, corrupt, weight)
    comps = P.select_components(cfg, ["heads", "mlp", "resid"], None)
    pi_clean = P.recall_pi(view, base.record.resid_final[:, None], base.answer_ids)[:, 0]
    exact = effects(P.exact_pi(view, base, patch, comps), pi_clean)
    naive = effects(P.naive_pi(view, base, patch, comps), pi_clean)
    assert (exact - naive).abs().max().item() <= 1e-3  # points; float32 rounding


def test_component_selection_and_bad_input():
    view, _, _, _ = tiny_setup("llama_gqa")
    comps = P.select_components(view.cfg, ["heads", "mlp"], [1])
    assert [c.name for c in comps] == ["L1H0", "L1H1", "L1H2", "L1H3", "MLP1"]
    assert [c.entry_layer for c in P.select_components(view.cfg, ["resid"], [0, 1])] == [0, 1]
    with pytest.raises(UserError, match="--components"):
        P.select_components(view.cfg, ["heads", "attn"], None)
    with pytest.raises(UserError, match="--layers"):
        P.select_components(view.cfg, ["heads"], [2])


def test_spearman_and_overlap():
    a = np.array([1.0, -5.0, 3.0, 0.5])
    assert spearman(a, a * 2) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert P.top_overlap(a, np.array([0.0, 9.0, 0.1, 0.2]), k=2) == 1


# ----------------------------------------------------------------------------- real model
@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 3])
def test_exact_equals_naive_on_smollm2_subset(smollm2, shots):
    """float64 view, so the comparison measures the algorithm, not float32 rounding."""
    view = ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64))
    model64 = dataclasses.replace(smollm2, view=view)
    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=shots, max_prompts=2)
    config = P.PatchConfig(batch_size=2, n_corruptions=2, components=("heads", "mlp", "resid"))
    prepared = P.prepare(model64, ps, config)
    comps = P.select_components(smollm2.cfg, ["heads", "mlp", "resid"], [0, 29])[:: 2 if shots == 0 else 4]
    exact = P.run_engine(view, prepared, comps, "exact", "noise")
    naive = P.run_engine(view, prepared, comps, "naive", "noise")
    assert np.abs(exact - naive).max() <= 1e-8  # the issue asks <= 1e-4; float64 leaves rounding only
    assert np.abs(exact).max() > 1.0  # patches move π by more than a percent somewhere
    # the stage (batches prepared and patched one at a time) gives the same table
    stage = P.patch(model64, ps, dataclasses.replace(config, layers=(0, 29), attribution=False), progress=False)
    assert [c.name for c in stage.components][:: 2 if shots == 0 else 4] == [c.name for c in comps]
    assert np.abs(stage.effects[:, :: 2 if shots == 0 else 4] - exact).max() <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 3])
def test_the_corrupted_mean_is_the_mean_of_each_corrupted_run_on_smollm2(smollm2, shots):
    """In float64 the corrupted mean (the n corruptions run from the subject on over the clean run's
    keys and values, weighted 1/n) equals the mean of each corrupted prompt run alone, whole, to
    1e-12 of its scale. (The weights were float32: 1/10 off by 1.5e-8 of every mean.)"""
    view = ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64))
    pad = smollm2.tokenizer.pad_token_id
    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=shots, max_prompts=6)
    kept, found, _ = P.with_corruptions(ps, smollm2.tokenizer, 10, 1)
    assert min(len(cs) for cs in found) == 10
    worst = 0.0
    for indices, batch in P.batches(kept.prompts, pad, 6):
        corrupt = [found[i] for i in indices]
        base = P.record_run(view, batch.input_ids, batch.attention_mask, batch.answer_ids(), prefix=True)
        got = P.corrupted_mean(view, base, *P._aligned_corruptions(batch, corrupt))
        for row, cs in enumerate(corrupt):
            alone = [P.record_run(view, b.input_ids, b.attention_mask, b.answer_ids(), prefix=False)
                     for b in (P.make_batch([c], pad) for c in cs)]
            for f in dataclasses.fields(P.RunRecord):
                want = torch.stack([getattr(a, f.name)[0] for a in alone]).mean(0)
                worst = max(worst, float((getattr(got, f.name)[row] - want).abs().max() / want.abs().max()))
    assert worst <= 1e-12, worst


@pytest.mark.slow
def test_patch_stage_table_summary_and_attribution_agreement(smollm2):
    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=0, max_prompts=12)
    result = P.patch(smollm2, ps, P.PatchConfig(batch_size=12, layers=tuple(range(0, 30, 3))), progress=False)
    frame = result.to_frame()
    n = result.effects.shape[0]
    assert len(frame) == n * len(result.components) == n * 10 * 10
    assert list(frame.columns[:9]) == ["component", "kind", "layer", "head", "prompt_index", "pi_clean", "pi_base", "pi_patched", "effect"]
    recomputed = 100 * (frame.pi_patched - frame.pi_clean) / frame.pi_clean
    assert np.abs(recomputed - frame.effect).max() <= 1e-6
    summary = result.to_dict()
    top = summary["top_components"]
    assert len(top) == 10
    assert [abs(t["effect"]) for t in top] == sorted((abs(t["effect"]) for t in top), reverse=True)
    means = frame.groupby("component").effect.mean()
    assert top[0]["effect"] == pytest.approx(means[top[0]["component"]])
    assert summary["attribution"]["spearman"] > 0.5
    assert summary["attribution"]["top10_overlap"] >= 3
    assert len(patch_figures.figures({"patch": frame}, summary)[0].data[0].y) == 10  # 9 heads + MLP


@pytest.mark.slow
def test_denoise_mode_restores_the_gap(smollm2):
    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=0, max_prompts=6)
    result = P.patch(smollm2, ps, P.PatchConfig(direction="denoise", components=("resid",), layers=(0, 29), attribution=False), progress=False)
    means = dict(zip((c.name for c in result.components), result.mean_effects(), strict=True))
    # the clean residual entering the last layer restores nearly the whole gap (only that
    # layer's attention still reads the corrupted subject); the layer-0 residual at the end
    # position ("is") is the same token embedding in both runs: it restores nothing.
    assert 90.0 <= means["RES29"] <= 110.0
    assert abs(means["RES0"]) <= 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (["--components", "heads,attn"], "--components"),
    (["--layers", "0,30"], "--layers"),
    (["--set", "patch.n_corruptions=0"], "n_corruptions"),
])
def test_cli_bad_input_is_one_line_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["patch", "--max-prompts", "3", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("recallscope: error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in err


def test_too_few_prompts_with_corruptions_is_a_user_error():
    from recallscope.tasks.prompts import PromptSet

    no_prompts = PromptSet(_FakeRelation(), 0, 0, ())
    with pytest.raises(UserError, match="at least 2 prompts with a same-length corruption"):
        P.with_corruptions(no_prompts, tokenizer=None, n_corruptions=3, min_prompts=2)


@dataclasses.dataclass
class _FakeRelation:
    name: str = "toy"
    samples: tuple = ()


@pytest.mark.slow
def test_cuda_out_of_memory_halves_the_batch_and_retries(smollm2, monkeypatch):
    """Preparation and engines split a batch in halves on torch.cuda.OutOfMemoryError (raised
    here by stand-ins above a size limit); the table is the one of the unsplit run."""
    ps = build_prompts(load_relation("country_capital_extended"), smollm2.tokenizer, shots=0, max_prompts=8)
    config = P.PatchConfig(batch_size=8, layers=(23, 29))
    whole = P.patch(smollm2, ps, config, progress=False)
    real_prepare, real_exact = P._prepare_batch, P.ENGINE_FUNCTIONS["exact"]
    prepared_sizes, engine_sizes = [], []

    def prepare_at_most_4(view, pad_id, indices, batch, corrupt, config, mean=None):
        if len(indices) > 4:
            raise torch.cuda.OutOfMemoryError("stand-in: prepare above 4 prompts")
        prepared_sizes.append(len(indices))
        return real_prepare(view, pad_id, indices, batch, corrupt, config, mean)

    def exact_at_most_2(view, base, patch, components):
        if base.size > 2:
            raise torch.cuda.OutOfMemoryError("stand-in: engine above 2 prompts")
        engine_sizes.append(base.size)
        return real_exact(view, base, patch, components)

    monkeypatch.setattr(P, "_prepare_batch", prepare_at_most_4)
    monkeypatch.setitem(P.ENGINE_FUNCTIONS, "exact", exact_at_most_2)
    split = P.patch(smollm2, ps, config, progress=False)
    assert sum(prepared_sizes) == len(whole.prompts) and max(prepared_sizes) <= 4
    assert max(engine_sizes) <= 2 and sum(engine_sizes) == len(whole.prompts)
    # float32, different batch shapes: equal up to rounding
    assert np.abs(split.effects - whole.effects).max() <= 5e-4
    assert np.abs(split.attribution_effects - whole.attribution_effects).max() <= 5e-4


def test_softcapped_pi_holds_a_bounded_number_of_logits(monkeypatch):
    """Under a final softcap recall_pi needs the full logits: B × c × V of them at a time (a larger
    vocabulary or more components get fewer per chunk), and π does not depend on the chunk (float64:
    in float32 another chunk width moves π by float32 rounding, ~2e-6 on π ≈ 5)."""
    cfg, weights = extract(tiny_model("gemma3_text_softcap_bias"))
    view = ModelView(cfg, weights.to(dtype=torch.float64))
    assert view.cfg.final_softcap
    B, C, V = 2, 7, view.cfg.d_vocab
    resid = torch.randn(B, C, view.cfg.d_model, generator=torch.Generator().manual_seed(0)).to(view.dtype)
    answers = torch.tensor([1, 2])
    whole = P.recall_pi(view, resid, answers)
    logits = view.unembed(view.final_norm(resid))
    # π = l_Y − mean l: two evaluations differ by at most the bound on a logit (l_Y) plus that on a
    # mean of V of them, derived for the view's dtype (in float32 a typed atol=1e-6 failed on another
    # CPU at 1.01e-6)
    per_logit = logit_difference_bound(view, resid)
    atol = per_logit + mean_difference_bound(per_logit, V, logits.abs().max().item(), logits.dtype)
    assert torch.allclose(whole, recall_metric(logits, answers[:, None].expand(B, C)), rtol=0, atol=atol)
    widths = []
    original = ModelView.unembed

    def counted(self, x):
        widths.append(x.shape[1])
        return original(self, x)

    monkeypatch.setattr(ModelView, "unembed", counted)
    monkeypatch.setattr(P, "LOGIT_ELEMENTS", B * V * 3)
    chunked = P.recall_pi(view, resid, answers)
    assert widths == [3, 3, 1]
    assert torch.allclose(chunked, whole, rtol=0, atol=atol)
    # the worst-case bound (every rounding error aligned) stays far below the logits' scale (float64:
    # ~1e-13 of it; float32 would be ~1/2000):
    # a chunk that scored the wrong rows or answers would be off by whole logits
    assert atol < 1e-3 * logits.abs().max().item()
