"""``--preset paper`` against the authors' path patching, written the way their code runs it.

The reference (:func:`authors_path_patching`) follows ``path_patching`` / ``plot_path_patching`` /
``logit_diff`` of trestad/Factual-Recall-Mechanism (easy_transformer/fact_utils.py) and
FactDataset (fact_dataset.py) on a Hugging Face GPT-2 with torch hooks: the clean and the
corrupted texts *with the answer appended*, tokenised as one right-padded batch (pad = the
end-of-text token) and run without an attention mask; the end index of every row is its length
− 2 (``get_end_idxs``), the corrupted dataset reads the clean one's (``manual_word_idx``); per
sender one full forward with every layer's q, k and v frozen to the clean run, the sender's
output at the end replaced by ``torch.mean(sender_cache, dim=0)`` read at the end index, MLPs
free; the figure is 100 · (mean π_patched − mean π_clean) / mean π_clean, π = logit[Y] − mean logit.

On a tiny random GPT-2 with the real GPT-2 BPE and ``paper_country_capital`` (six prompt lengths
at 0 and at 1 shot), recallscope's stage with the paper preset's settings and ``recallscope patch
--preset paper`` itself equal it on every head and MLP (the same top 10), recallscope's own-end mean
does not, and a prompt set of one length shows the two dataset means agree there.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2LMHeadModel

from helpers.gpt2_bpe import tiny_gpt2_bpe
from recallscope import load_model
from recallscope import patch as P
from recallscope.pipeline import make_configs
from recallscope.presets import PAPER
from recallscope.tasks import Relation, build_prompts, load_relation
from recallscope.tasks.prompts import swapped_subject_prompts

TOLERANCE_POINTS = 1e-4  # the bound on |recallscope − reference| (percentage points)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return tiny_gpt2_bpe(tmp_path_factory.mktemp("tiny_gpt2_bpe"))


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    """recallscope's model and the Hugging Face module of the same weights, both float64."""
    model = load_model(str(gpt2_dir), dtype="float64")
    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir, torch_dtype=torch.float64, attn_implementation="eager").eval()
    return model, hf


@pytest.fixture(scope="module")
def reference(gpt2):
    """The authors' loop on the paper preset's prompts at ``shots`` (each computed once): (prompts, corrupted, heads, mlps)."""
    model, hf = gpt2
    done = {}

    def get(shots: int):
        if shots not in done:
            ps = paper_prompts(model, shots)
            corrupted = swapped_subject_prompts(ps, model.tokenizer, draw=paper_config().corruption_draw)
            done[shots] = (ps, corrupted, *authors_path_patching(hf, model.tokenizer, ps.prompts, corrupted))
        return done[shots]

    return get


def paper_config() -> P.PatchConfig:
    return make_configs(PAPER.stage_settings())["patch"]


def paper_prompts(model, shots: int, relation=None):
    run = PAPER.run_settings()
    relation = relation or load_relation(run["relation"])
    return build_prompts(relation, model.tokenizer, shots=shots, seed=0, demonstrations=run["demonstrations"])


# --------------------------------------------------------------------------- the reference
@torch.no_grad()
def authors_path_patching(hf: GPT2LMHeadModel, tokenizer, clean, corrupted) -> tuple[np.ndarray, np.ndarray]:
    """(heads [L, H], mlps [L]) in percent: the authors' loop, one frozen-heads forward per sender."""
    eot = tokenizer.eos_token_id

    def toks(prompts):  # FactDataset: tokenizer(texts, padding=True) with pad_token = eos_token (right padding)
        rows = [tokenizer(p.text + " " + p.answer)["input_ids"] for p in prompts]
        out = torch.full((len(rows), max(map(len, rows))), eot, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    d_orig, d_new = toks(clean), toks(corrupted)
    # get_end_idxs(name_tok_len=1): the first end-of-text token (or the width) minus 2
    end = torch.tensor([(int((r == eot).nonzero()[0]) if (r == eot).any() else len(r)) - 2 for r in d_orig])
    rows = torch.arange(len(clean))
    answers = torch.tensor([tokenizer(" " + p.answer)["input_ids"][0] for p in clean])
    blocks = hf.transformer.h
    H = hf.config.n_head
    dh = hf.config.n_embd // H

    def run(ids, hooks):
        handles = [module.register_forward_hook(fn) for module, fn in hooks]
        try:
            hidden = hf.transformer(ids).last_hidden_state  # no attention mask, as model(D.toks)
        finally:
            for h in handles:
                h.remove()
        logits = hf.lm_head(hidden[rows, end])  # the receiver: the final residual at the end
        return (logits[rows, answers] - logits.mean(-1)).mean()  # logit_diff(metric='iw'), averaged

    def cache(ids):  # per layer: c_attn output (q, k, v), each head's result z_h W_O[h], the MLP output
        store = {}
        hooks = []
        for layer, block in enumerate(blocks):
            hooks.append((block.attn.c_attn, lambda m, i, o, layer=layer: store.__setitem__(("qkv", layer), o)))
            hooks.append((block.mlp, lambda m, i, o, layer=layer: store.__setitem__(("mlp", layer), o)))

            def result(m, i, o, layer=layer):
                z = i[0].reshape(*i[0].shape[:-1], H, dh)
                store[("result", layer)] = torch.einsum("bshe,hed->bshd", z, m.weight.reshape(H, dh, -1))

            hooks.append((block.attn.c_proj, result))
        handles = [module.register_forward_hook(fn) for module, fn in hooks]
        try:
            hf.transformer(ids)
        finally:
            for h in handles:
                h.remove()
        return store

    target, sender_cache = cache(d_orig), cache(d_new)
    frozen = [(block.attn.c_attn, lambda m, i, o, layer=layer: target[("qkv", layer)]) for layer, block in enumerate(blocks)]
    default = run(d_orig, frozen)
    heads = np.zeros((len(blocks), H))
    mlps = np.zeros(len(blocks))
    for layer, block in enumerate(blocks):
        for head in [None, *range(H)]:
            if head is None:
                mean = sender_cache[("mlp", layer)].mean(0)  # [S, d]

                def patch_mlp(m, i, o, mean=mean):
                    o = o.clone()
                    o[rows, end] = mean[end]
                    return o

                hook = (block.mlp, patch_mlp)
            else:
                mean = sender_cache[("result", layer)][:, :, head].mean(0)  # [S, d]

                def patch_head(m, i, o, mean=mean, head=head):
                    z = i[0][rows, end].reshape(len(rows), H, dh)[:, head]
                    o = o.clone()
                    o[rows, end] += mean[end] - z @ m.weight[head * dh : (head + 1) * dh]
                    return o

                hook = (block.attn.c_proj, patch_head)
            effect = 100 * float((run(d_orig, [*frozen, hook]) - default) / default)
            if head is None:
                mlps[layer] = effect
            else:
                heads[layer, head] = effect
    return heads, mlps


def stage_effects(model, prompts, config) -> tuple[np.ndarray, np.ndarray]:
    return table_effects(P.patch(model, prompts, config, progress=False).tables()["components"], model.cfg.n_heads)


def table_effects(table: pd.DataFrame, n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """(heads [L, H], mlps [L]) effects (%) from a components table (the stage's or its Parquet file)."""
    heads = table[table.kind == "head"].sort_values(["layer", "head"])["effect"].to_numpy().reshape(-1, n_heads)
    mlps = table[table.kind == "mlp"].sort_values("layer")["effect"].to_numpy()
    return heads, mlps


def cli_patch(model_dir, out, *args) -> subprocess.CompletedProcess:
    """``recallscope patch --preset paper`` on the tiny GPT-2 in float64, in a child process."""
    cmd = ["patch", "--preset", "paper", "--model", str(model_dir), "--dtype", "float64", "--out", str(out), "--json", *args]
    return subprocess.run([sys.executable, "-m", "recallscope", *cmd], capture_output=True, text=True, timeout=600)


def top10(heads: np.ndarray, mlps: np.ndarray) -> list:
    values = np.concatenate([heads.ravel(), mlps])
    return list(np.argsort(-np.abs(values))[:10])


# --------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("shots", [0, 1])
def test_paper_preset_equals_the_authors_loop_on_prompts_of_several_lengths(gpt2, reference, shots):
    model, _ = gpt2
    ps, corrupted, ref_heads, ref_mlps = reference(shots)
    assert len({p.n_tokens for p in ps.prompts}) >= 3 and len(ps) == 225  # every prompt, six lengths
    assert len(corrupted) == len(ps)
    assert any(c.subject == p.subject for c, p in zip(corrupted, ps.prompts, strict=True))  # the authors' draw allows it
    config = paper_config()
    heads, mlps = stage_effects(model, ps, config)
    diff = max(np.abs(heads - ref_heads).max(), np.abs(mlps - ref_mlps).max())
    assert diff <= TOLERANCE_POINTS, f"max |recallscope - authors' loop| = {diff:.3g} points"
    assert top10(heads, mlps) == top10(ref_heads, ref_mlps)
    assert np.abs(ref_heads).max() > 1.0  # the patches move π: the comparison is not vacuous
    assert (config.sender_mean, config.corruption_draw, config.mode) == ("dataset_by_position", "any_subject", "path")
    # recallscope's own-end mean is another number on these prompts (what the preset must not use)
    own_heads, own_mlps = stage_effects(model, ps, dataclasses.replace(config, sender_mean="dataset"))
    assert max(np.abs(own_heads - ref_heads).max(), np.abs(own_mlps - ref_mlps).max()) > 100 * TOLERANCE_POINTS


def test_the_two_dataset_means_agree_when_every_prompt_has_one_length(gpt2):
    model, hf = gpt2
    paper = load_relation("paper_country_capital")
    one = Relation("one_template", paper.templates[:1], paper.templates_zs[:1], paper.samples, "test")
    ps = paper_prompts(model, 0, relation=one)
    assert len({p.n_tokens for p in ps.prompts}) == 1 and len(ps) == 15
    config = paper_config()
    by_position = stage_effects(model, ps, config)
    own_end = stage_effects(model, ps, dataclasses.replace(config, sender_mean="dataset"))
    reference = authors_path_patching(
        hf, model.tokenizer, ps.prompts, swapped_subject_prompts(ps, model.tokenizer, "any_subject")
    )
    for got in (by_position, own_end):
        assert max(np.abs(got[0] - reference[0]).max(), np.abs(got[1] - reference[1]).max()) <= 1e-9
    # the means themselves: the same vectors at the end
    view = model.view
    corrupted = swapped_subject_prompts(ps, model.tokenizer, "any_subject")
    a = P.dataset_mean_by_position(view, model.tokenizer, corrupted, [p.n_tokens - 1 for p in ps.prompts], 4).values(ps.prompts)
    b = P.dataset_mean(view, corrupted, model.tokenizer.eos_token_id, 4).values(ps.prompts)
    assert max(float((getattr(a, f.name) - getattr(b, f.name)).abs().max()) for f in dataclasses.fields(P.RunRecord)) <= 1e-10


@pytest.mark.parametrize("shots", [0, 1])
def test_the_authors_mean_in_total_mode_exact_equals_naive(gpt2, shots):
    """The authors' mean is a sender value like any other: total mode (every later component recomputes)
    takes it too, and the exact engine equals one full forward per component."""
    model, _ = gpt2
    ps = build_prompts(
        load_relation("paper_country_capital"), model.tokenizer, shots=shots, seed=0, max_prompts=24, demonstrations="plain"
    )
    assert len({p.n_tokens for p in ps.prompts}) >= 3
    config = dataclasses.replace(paper_config(), mode="total", attribution=False)
    exact = P.patch(model, ps, config, progress=False)
    naive = P.patch(model, ps, dataclasses.replace(config, engine="naive"), progress=False)
    assert np.abs(exact.effects - naive.effects).max() <= 1e-9
    own = P.patch(model, ps, dataclasses.replace(config, sender_mean="dataset"), progress=False)
    assert np.abs(exact.effects - own.effects).max() > 1.0  # another value patched in
    path = P.patch(model, ps, paper_config(), progress=False)
    assert np.abs(exact.effects - path.effects).max() > 1.0  # total and path effects differ


@pytest.mark.parametrize("shots", [0, 1])
def test_the_cli_paper_preset_writes_the_authors_numbers(gpt2_dir, reference, tmp_path, shots):
    """``recallscope patch --preset paper`` itself (a child process) on paper_country_capital: its components
    table equals the reference loop to 1e-4 points on every head and MLP, with the same top 10."""
    out = tmp_path / "run"
    proc = cli_patch(gpt2_dir, out, "--shots", str(shots))
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_parquet(out / "patch" / "components.parquet")
    _, _, ref_heads, ref_mlps = reference(shots)
    heads, mlps = table_effects(table, ref_heads.shape[1])
    diff = max(np.abs(heads - ref_heads).max(), np.abs(mlps - ref_mlps).max())
    assert diff <= TOLERANCE_POINTS, f"max |recallscope patch --preset paper - authors' loop| = {diff:.3g} points"
    assert top10(heads, mlps) == top10(ref_heads, ref_mlps)
    printed = json.loads(proc.stdout)
    summary = printed["stages"]["patch"]
    assert (printed["relation"], printed["shots"], summary["n_prompts"]) == ("paper_country_capital", shots, 225)
    assert summary["sender_mean"] == "dataset_by_position" and summary["corruption_draw"] == "any_subject"
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("templates" in line for line in manifest["preset"]["not_reproduced"])


def test_the_cli_paper_preset_on_a_relation_file_of_ones_own_templates_equals_the_authors_loop(gpt2, gpt2_dir, tmp_path):
    """``--preset paper --relation FILE``: lead-ins of one's own (the authors' NC_TEMPLATES, say, which
    recallscope does not ship) written as an LRE-format file run with the preset's definitions, and the
    numbers equal the authors' loop on the file's prompts."""
    model, hf = gpt2
    paper = load_relation("paper_country_capital")
    own = {
        "name": "my_capitals",
        "prompt_templates": ["In short, the capital of {} is"],
        "prompt_templates_zs": ["The capital of {} is", "As every atlas of the world shows, the capital city of {} is"],
        "properties": {"demonstration_template": "The capital of {} is"},
        "samples": [{"subject": s.subject, "object": s.object} for s in paper.samples],
    }
    path = tmp_path / "my_capitals.json"
    path.write_text(json.dumps(own))
    out = tmp_path / "run"
    proc = cli_patch(gpt2_dir, out, "--relation", str(path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    ps = paper_prompts(model, 0, relation=load_relation(str(path)))
    assert len(ps) == 30 and len({p.n_tokens for p in ps.prompts}) >= 2  # every prompt of the file, two lengths
    ref_heads, ref_mlps = authors_path_patching(
        hf, model.tokenizer, ps.prompts, swapped_subject_prompts(ps, model.tokenizer, draw="any_subject")
    )
    table = pd.read_parquet(out / "patch" / "components.parquet")
    heads, mlps = table_effects(table, ref_heads.shape[1])
    assert max(np.abs(heads - ref_heads).max(), np.abs(mlps - ref_mlps).max()) <= TOLERANCE_POINTS
    assert top10(heads, mlps) == top10(ref_heads, ref_mlps)
    printed = json.loads(proc.stdout)
    assert printed["relation"] == "my_capitals" and printed["stages"]["patch"]["n_prompts"] == 30
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["relation"]["source"] == str(path) and manifest["preset"]["name"] == "paper"
