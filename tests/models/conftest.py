"""The identities every architecture's exact view must satisfy, shared by the tiny and real models.

For a left-padded batch, with the Hugging Face model as the reference:
(a) the view's logits equal HF's at every real position (HF given the same position ids);
(b) Σ_h a[l,h] + b_O equals the attention output (relative error);
(c) r_mid[l] = r[l] + attn[l] and r[l+1] = r_mid[l] + m[l];
(d) the logit lens of the final residual reproduces the logits;
(e) each row's end logits equal those of its prompt run alone (padding never misaligns).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from helpers.tiny import left_pad
from recallscope.models.view import ModelView, position_ids_from_mask


@dataclass
class Measured:
    hf_logits_max_abs: float  # (a)
    heads_sum_rel_err: float  # (b)
    resid_mid_max_abs: float  # (c)
    resid_next_max_abs: float  # (c)
    lens_max_abs: float  # (d) against the view's own logits: the same computation, so ~exact
    lens_vs_hf_max_abs: float  # (d) against HF's logits at the recorded positions
    alone_max_abs: float  # (e)


def _head_bias(view: ModelView, z: torch.Tensor, layer: int):
    # With a post-attention norm the bias is scaled by the norm's factor of the real sum.
    attn_raw = view.attn_raw(layer, z) if view.cfg.post_attn_norm else None
    return view.head_bias(layer, attn_raw)


@torch.no_grad()
def measure_identities(view: ModelView, hf_model, prompts: list[list[int]], pad_id: int, n_last: int = 3) -> Measured:
    ids, mask = left_pad(prompts, pad_id)
    B, S = ids.shape
    cfg = view.cfg
    positions = torch.arange(S - n_last, S).expand(B, n_last)
    trace = view.trace(
        ids, mask, positions=positions, all_logits=True,
        record=("logits", "resid_pre", "resid_mid", "attn_out", "head_out", "mlp_out", "resid_final", "z"),
    )
    position_ids = position_ids_from_mask(mask)
    hf_logits = hf_model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits.float()
    real = mask.bool()
    hf_err = (trace.full_logits[real] - hf_logits[real]).abs().max().item()

    rel = 0.0
    for layer in range(cfg.n_layers):
        total = trace.head_out[:, :, layer].sum(-2)
        bias = _head_bias(view, trace.z[:, :, layer], layer)
        if bias is not None:
            total = total + bias
        attn = trace.attn_out[:, :, layer]
        rel = max(rel, ((total - attn).norm() / attn.norm()).item())

    mid = (trace.resid_mid - (trace.resid_pre + trace.attn_out)).abs().max().item()
    nxt = (trace.resid_pre[:, :, 1:] - (trace.resid_mid + trace.mlp_out)[:, :, :-1]).abs().max().item()
    final_from_last = (trace.resid_final - (trace.resid_mid + trace.mlp_out)[:, :, -1]).abs().max().item()
    lensed = view.logits_from_resid(trace.resid_final)
    lens = (lensed - trace.logits).abs().max().item()
    lens_vs_hf = (lensed - hf_logits[:, S - n_last:]).abs().max().item()

    alone = 0.0
    for row, prompt in enumerate(prompts):
        single = view.trace(torch.tensor([prompt])).logits[0, -1]
        alone = max(alone, (single - trace.full_logits[row, -1]).abs().max().item())
    return Measured(
        hf_logits_max_abs=hf_err,
        heads_sum_rel_err=rel,
        resid_mid_max_abs=mid,
        resid_next_max_abs=max(nxt, final_from_last),
        lens_max_abs=lens,
        lens_vs_hf_max_abs=lens_vs_hf,
        alone_max_abs=alone,
    )


def assert_identities(m: Measured, logits_atol: float = 1e-4) -> None:
    assert m.hf_logits_max_abs <= logits_atol, m  # (a)
    assert m.heads_sum_rel_err <= 1e-5, m  # (b)
    assert m.resid_mid_max_abs <= 1e-6 and m.resid_next_max_abs <= 1e-6, m  # (c)
    assert m.lens_max_abs <= 1e-6 and m.lens_vs_hf_max_abs <= logits_atol, m  # (d)
    assert m.alone_max_abs <= logits_atol, m  # (e)


@pytest.fixture
def identities():
    """(measure, assert) for the view identities (a)–(e)."""
    return measure_identities, assert_identities
