"""The whole-answer metric (answers of several tokens, teacher-forced): every patch engine equals
its naive loop under it, on a tiny float64 model of every family; the one-token metric is the
A = 1 case of the same code; the metric equals π summed over a plain forward of prompt + answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.localise import tiny, tiny_prompts
from helpers.tiny import PAD, VOCAB, left_pad, random_prompts, tiny_model
from recallscope import causal_trace as CT
from recallscope import knockout as K
from recallscope import patch as P
from recallscope.lens import answer_metric, answer_stats, recall_metric
from recallscope.models.adapters import extract
from recallscope.models.view import ModelView
from recallscope.recall import recall
from recallscope.tasks import build_prompts, load_relation

FAMILIES = ["gpt2", "opt", "gpt_neox_parallel", "gpt_neox_sequential", "llama_gqa", "gemma3_text", "gemma3_text_softcap_bias"]
A = 3  # scored answer tokens per prompt


def _view(name: str) -> ModelView:
    cfg, weights = extract(tiny_model(name))
    return ModelView(cfg, weights.to(dtype=torch.float64))


def _rows(seed: int = 1):
    """Left-padded prompts with their first A − 1 answer tokens appended, the targets [B, A] and
    corruptions [B, n, S_prompt] of two middle prompt tokens."""
    prompts = random_prompts(seed=seed)
    ids, mask = left_pad(prompts, PAD)
    B, S = ids.shape
    gen = torch.Generator().manual_seed(11)
    targets = torch.randint(3, VOCAB - 3, (B, A), generator=gen)
    full_ids = torch.cat([ids, targets[:, :-1]], 1)
    full_mask = torch.cat([mask, torch.ones(B, A - 1, dtype=mask.dtype)], 1)
    corrupt = ids[:, None].repeat(1, 3, 1)
    corrupt[:, :, S - 4 : S - 2] = torch.randint(3, VOCAB - 3, (B, 3, 2), generator=gen)
    weight = torch.full((B, 3), 1.0 / 3, dtype=torch.float64)
    return ids, mask, full_ids, full_mask, targets, corrupt, weight


def _effects(pi: torch.Tensor, pi_clean: torch.Tensor) -> torch.Tensor:
    return 100.0 * (pi - pi_clean[:, None]) / pi_clean[:, None]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_engine_equals_its_naive_loop_under_the_whole_answer_metric(name):
    view = _view(name)
    ids, mask, full_ids, full_mask, targets, corrupt, weight = _rows()
    base = P.record_run(view, full_ids, full_mask, targets[:, 0], prefix=True, targets=targets)
    # π of the clean run: the sum of π over a plain forward of prompt + answer at the last A columns
    S = full_ids.shape[1]
    logits = view.trace(full_ids, full_mask, positions=torch.arange(S - A, S).expand(len(ids), A)).logits
    pi_clean = P.recall_pi(view, base.final_resid(), targets)[:, 0]
    assert (pi_clean - recall_metric(logits, targets).sum(-1)).abs().max().item() <= 1e-10
    # the corrupted mean at the end equals the one of the prompts alone (answer tokens come after it)
    alone = P.record_run(view, ids, mask, targets[:, 0], prefix=True)
    patch = P.corrupted_mean(view, base, corrupt, weight)
    reference = P.corrupted_mean(view, alone, corrupt, weight)
    assert (patch.head_out - reference.head_out).abs().max().item() <= 1e-12
    comps = P.select_components(view.cfg, ["heads", "mlp", "resid"], None)
    exact = P.exact_pi(view, base, patch, comps)
    naive = P.naive_pi(view, base, patch, comps)
    diff = (_effects(exact, pi_clean) - _effects(naive, pi_clean)).abs().max().item()
    assert diff <= 1e-10, diff  # points, float64: rounding only
    assert (exact - pi_clean[:, None]).abs().max().item() > 1e-2  # the patches matter
    # later answer tokens move too: the effect is not the first token's alone
    first_only = P.exact_pi(
        view, P.BaseRun(alone.input_ids, alone.attention_mask, alone.answer_ids, alone.record, alone.prefix_kv), patch, comps
    )
    first_clean = P.recall_pi(view, alone.record.resid_final[:, None], targets[:, 0])[:, 0]
    assert ((exact - pi_clean[:, None]) - (first_only - first_clean[:, None])).abs().max().item() > 1e-3
    # path patching: the frozen-heads engine equals its full-forward loop
    path_exact = P.path_exact_pi(view, base, patch, comps)
    path_naive = P.path_naive_pi(view, base, patch, comps)
    assert (_effects(path_exact, pi_clean) - _effects(path_naive, pi_clean)).abs().max().item() <= 1e-10


@pytest.mark.parametrize("name", ["llama_gqa", "gemma3_text", "gpt_neox_parallel"])
def test_attribution_is_the_first_order_term_under_the_whole_answer_metric(name):
    """A patch scaled by ε: attribution's estimate and the exact change agree to O(ε²)."""
    view = _view(name)
    _, _, full_ids, full_mask, targets, corrupt, weight = _rows()
    base = P.record_run(view, full_ids, full_mask, targets[:, 0], prefix=True, targets=targets)
    patch = P.corrupted_mean(view, base, corrupt, weight)
    eps = 1e-4
    near = P.RunRecord(
        *(
            c + eps * (p - c)
            for c, p in zip(
                (
                    base.record.resid_pre,
                    base.record.resid_mid,
                    base.record.mlp_out,
                    base.record.head_out,
                    base.record.resid_final,
                ),
                (patch.resid_pre, patch.resid_mid, patch.mlp_out, patch.head_out, patch.resid_final),
                strict=True,
            )
        )
    )
    comps = P.select_components(view.cfg, ["heads", "mlp", "resid"], None)
    pi_clean = P.recall_pi(view, base.final_resid(), targets)[:, 0]
    exact = P.exact_pi(view, base, near, comps) - pi_clean[:, None]
    approx = P.attribution_pi(view, base, near, comps) - pi_clean[:, None]
    scale = exact.abs().max().item()
    assert scale > 1e-8
    assert (exact - approx).abs().max().item() <= 1e-3 * scale


def test_one_token_is_the_a_equals_1_case():
    """With one scored token the whole-answer code paths give today's numbers bit for bit."""
    view = _view("llama_gqa")
    ids, mask, *_ = _rows()
    answers = torch.tensor([5, 17, 42])
    base = P.record_run(view, ids, mask, answers, prefix=True)
    as_targets = P.record_run(view, ids, mask, answers, prefix=True, targets=answers[:, None])
    assert as_targets.targets is None and torch.equal(base.final_resid(), base.record.resid_final[:, None])
    logits = view.trace(ids, mask).logits[:, 0]
    one = answer_stats(logits, answers)
    many = answer_stats(logits[:, None], answers[:, None])
    for key in one:
        assert torch.equal(one[key], many[key]), key
    assert torch.equal(answer_metric(logits[:, None], answers[:, None]), recall_metric(logits, answers))


def _answer_prompts(model, prompts, seed: int = 3):
    """The tiny prompts scored on A tokens each: random targets, the first one the model's top-1."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p in prompts.prompts:
        rest = tuple(torch.randint(3, VOCAB - 3, (A - 1,), generator=gen).tolist())
        out.append(dataclasses.replace(p, target_ids=(p.answer_id, *rest)))
    return dataclasses.replace(prompts, prompts=tuple(out), metric="answer")


@pytest.mark.parametrize("name", FAMILIES)
def test_causal_tracing_exact_equals_romes_loop_under_the_whole_answer_metric(name):
    model = tiny(name)
    prompts = _answer_prompts(model, tiny_prompts(model=model))
    config = CT.TraceConfig(n_samples=3, window=2, noise_rule="in_context")
    exact = CT.trace(model, prompts, dataclasses.replace(config, engine="exact"), progress=False).to_frame()
    naive = CT.trace(model, prompts, dataclasses.replace(config, engine="naive"), progress=False).to_frame()
    assert len(exact) == 3 * (7 + 7 + 6) * model.cfg.n_layers  # the prompts' positions only
    assert np.abs(exact["p_restored"].to_numpy() - naive["p_restored"].to_numpy()).max() <= 1e-12
    assert np.abs(exact["p_clean"] - naive["p_clean"]).max() <= 1e-14
    assert (exact["indirect_effect"].abs() / exact["p_clean"]).max() > 1e-2  # the restorations matter
    # p is the whole answer's: the clean p is the product over a plain forward of prompt + answer
    p = prompts.prompts[0]
    ids = torch.tensor([list(p.input_ids) + list(p.target_ids[:-1])])
    S = ids.shape[1]
    logits = model.view.trace(ids, positions=torch.arange(S - A, S)[None]).logits[0]
    joint = float(torch.softmax(logits, -1).gather(-1, torch.tensor(p.target_ids)[:, None]).prod())
    assert abs(exact[exact["prompt_index"] == 0]["p_clean"].iloc[0] - joint) <= 1e-14


@pytest.mark.parametrize("name", FAMILIES)
def test_knockout_exact_equals_its_naive_loop_under_the_whole_answer_metric(name):
    model = tiny(name)
    prompts = _answer_prompts(model, tiny_prompts(model=model))
    config = K.KnockoutConfig(window=2)
    exact = K.knockout(model, prompts, config, progress=False).to_frame()
    naive = K.knockout(model, prompts, dataclasses.replace(config, engine="naive"), progress=False).to_frame()
    assert np.abs(exact["p_blocked"].to_numpy() - naive["p_blocked"].to_numpy()).max() <= 1e-12
    assert exact["relative_change_pct"].abs().max() > 1.0  # percent: the knockouts matter


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 3])
def test_exact_engines_equal_their_naive_loops_on_smollm2_birth_years_in_float64(smollm2, lre_dir, shots):
    """presidents_birth_year on smollm2-135m (every answer shares ' 1': the whole-answer metric, three
    digits scored): known prompts exist, and patch (total and path, exact vs naive; attribution at
    ε), causal tracing and knockout equal their naive loops in float64 on them."""
    view = ModelView(smollm2.cfg, smollm2.view.weights.to(dtype=torch.float64))
    model = dataclasses.replace(smollm2, view=view)
    ps = build_prompts(load_relation(str(lre_dir / "presidents_birth_year.json")), smollm2.tokenizer, shots=shots)
    assert ps.metric == "answer" and ps.answer_prefix_text == " 1"
    known = recall(model, ps, progress=False).known
    assert len(known) > 0 and all(p.n_targets == 3 for p in known.prompts)
    prompts = dataclasses.replace(known, prompts=known.prompts[:2])
    # patch, total and path: two known prompts (each with its same-length corruptions), sampled components
    # (all known prompts made this the suite's slowest test: the identity is per prompt)
    comps = P.select_components(view.cfg, ["heads", "mlp", "resid"], None)
    picked = [comps[i] for i in np.linspace(0, len(comps) - 1, 12).round().astype(int)]
    diffs = {}
    for mode in ("total", "path"):
        config = P.PatchConfig(mode=mode, min_prompts=1, attribution=False)
        prepared = P.prepare(model, prompts, config)
        exact = P.run_engine(view, prepared, picked, "exact", "noise", mode)
        naive = P.run_engine(view, prepared, picked, "naive", "noise", mode)
        diffs[mode] = float(np.abs(exact - naive).max())
        assert np.abs(exact).max() > 0.1  # percent: the patches matter
    # causal tracing: one prompt, every restoration exact; ROME's loop on 30 of them
    prompt = prompts.prompts[0]
    sigma = 3 * CT.subject_embedding_std(view, prompts)
    noise = torch.from_numpy(CT.noise_draws(prompt, 2, view.cfg.d_model, 0) * sigma)
    traced = CT.exact_group(view, [prompt], [noise], CT.KINDS, 10)
    restores = CT.restorations(CT.KINDS, prompt.n_tokens, view.cfg.n_layers, 10)
    only = {(k, p, layer) for k, p, layer, _ in (restores[int(i)] for i in np.linspace(0, len(restores) - 1, 30).round())}
    only |= {("resid", prompt.n_tokens - 1, view.cfg.n_layers - 1)}  # the end's last layer: clean first token, noised rest
    loop = CT.naive_prompt(view, prompt, noise, CT.KINDS, 10, only=only)
    diffs["trace"] = max(float(np.nanmax(np.abs(traced["p_restored"][k][0] - loop["p_restored"][k]))) for k in CT.KINDS)
    # knockout: two prompts, every window of the three blocked sets
    config = K.KnockoutConfig()
    a = K.knockout(model, prompts, config, progress=False).to_frame()
    b = K.knockout(model, prompts, dataclasses.replace(config, engine="naive"), progress=False).to_frame()
    diffs["knockout"] = float(np.abs(a["p_blocked"].to_numpy() - b["p_blocked"].to_numpy()).max())
    print(f"presidents_birth_year {shots}-shot, {len(known)} known, max |exact - naive|: {diffs}")
    assert diffs["total"] <= 1e-8 and diffs["path"] <= 1e-8  # effect, percentage points
    assert diffs["trace"] <= 1e-12 and diffs["knockout"] <= 1e-12  # p of the answer
