"""Issue 16, class B: `recallscope run` (every stage, and the report) on a tiny model of every
family the adapters accept, through the command line, each checked against identities.

The models are random (3 layers, d = 64) with smollm2's tokenizer, saved as local model
directories; ``recall.known_top_k`` is the vocabulary size so every prompt counts as known and
every stage has data. A random model knows nothing, so the checks are identities, not claims:
- recall's π(Y) equals π computed from a plain transformers forward on the same tokens;
- suppress's "before" π equals recall's π prompt by prompt (two stages, one quantity);
- the summary's n_known / accuracy / mean_p_answer equal the recall table's;
- stderr holds recallscope's own lines only (no traceback, no library warning).
The Llama directory's tokenizer appends ``<|im_end|>`` (class E): no prompt may end with it.
GPT-NeoX with parallel residual also runs the sgd solver (the reported crash).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from tokenizers.processors import TemplateProcessing
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Qwen2Config,
)

from helpers.tiny import randomise
from recallscope.models.loading import load_model
from recallscope.tasks import build_prompts, load_relation

pytestmark = pytest.mark.slow

STAGES = ("recall", "patch", "movers", "decompose", "intercept", "suppress", "claims")
MAX_PROMPTS = 12


def configs(vocab: int, pad: int) -> dict:
    llama_like = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=pad)
    neox = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                rotary_pct=0.25, max_position_embeddings=256)
    return {
        "gpt2": GPT2Config(vocab_size=vocab, n_positions=256, n_embd=64, n_layer=3, n_head=4),
        "opt": OPTConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=3, ffn_dim=128, num_attention_heads=4,
                         max_position_embeddings=256, word_embed_proj_dim=64, pad_token_id=pad),
        "gpt_neox_parallel": GPTNeoXConfig(use_parallel_residual=True, **neox),
        "gpt_neox_sequential": GPTNeoXConfig(use_parallel_residual=False, **neox),
        "llama_gqa_eos_tokenizer": LlamaConfig(**llama_like),
        "mistral_sliding_window": MistralConfig(sliding_window=3, **llama_like),
        "qwen2_sliding_window": Qwen2Config(use_sliding_window=True, sliding_window=3, max_window_layers=1, **llama_like),
        "gemma3_text": Gemma3TextConfig(head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
                                        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                        **llama_like),
    }


EXTRA = {"gpt_neox_parallel": ("--set", "decompose.solver=sgd", "--set", "decompose.sgd_steps=3000")}


@pytest.fixture(scope="module")
def model_dirs(smollm2, tmp_path_factory):
    tok = smollm2.tokenizer
    root = tmp_path_factory.mktemp("families")
    out = {}
    for name, config in configs(len(tok), tok.pad_token_id).items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        randomise(model, 0)
        path = root / name
        model.save_pretrained(path)
        saved = tok
        if name.startswith("llama"):
            import copy

            saved = copy.deepcopy(tok)
            eos = saved.convert_tokens_to_ids("<|im_end|>")
            saved._tokenizer.post_processor = TemplateProcessing(single="$A <|im_end|>", special_tokens=[("<|im_end|>", eos)])
        saved.save_pretrained(path)
        out[name] = path
    return out


def run_cli(model_dir, out, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    args = [sys.executable, "-m", "recallscope", "run", "--model", str(model_dir), "--relation", "country_capital_extended",
            "--max-prompts", str(MAX_PROMPTS), "--out", str(out), "--json",
            "--set", "recall.known_top_k=49152", "--set", "decompose.layer=1", *extra]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize("family", sorted(configs(10, 0)))
def test_fault_B_run_every_stage_on_every_family(family, model_dirs, tmp_path):
    proc = run_cli(model_dirs[family], tmp_path / "run", *EXTRA.get(family, ()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in proc.stderr.splitlines()
             if line.strip() and not line.startswith(("recallscope:",)) and "done in" not in line and "reused" not in line]
    assert not any("Traceback" in line or "Warning" in line or "%|" in line for line in noise), noise
    summary = json.loads(proc.stdout)
    assert set(summary["stages"]) >= set(STAGES)
    report = (tmp_path / "run" / "report.html").read_text()
    assert report.startswith("<!") and "</html>" in report

    recall = pd.read_parquet(tmp_path / "run" / "recall.parquet")
    assert len(recall) == MAX_PROMPTS and recall["known"].all()
    assert summary["n_known"] == int(recall["known"].sum())
    assert summary["accuracy"] == pytest.approx(recall["correct"].mean())
    assert summary["mean_p_answer"] == pytest.approx(recall["p_answer"].mean(), rel=1e-6)

    # recall's π(Y) = logit[Y] − mean logit, against a plain transformers forward on the same tokens
    model = load_model(str(model_dirs[family]))
    prompts = build_prompts(load_relation("country_capital_extended"), model.tokenizer, shots=0, max_prompts=MAX_PROMPTS)
    assert [p.text for p in prompts.prompts] == recall["text"].tolist()
    worst = 0.0
    end_tokens = set()
    with torch.no_grad():
        for p, pi in zip(prompts.prompts, recall["pi_answer"], strict=True):
            logits = model.hf_model(torch.tensor([p.input_ids])).logits[0, -1].double()
            worst = max(worst, abs((logits[p.answer_id] - logits.mean()).item() - pi))
            end_tokens.add(model.tokenizer.decode([p.input_ids[-1]]))
    print(f"{family}: max |π(recall) − π(transformers)| = {worst:.2e}")
    assert worst <= 1e-3
    assert end_tokens == {" is"}  # never <|im_end|>, even where the tokenizer appends it

    # two stages, one quantity: suppress's "before" π is recall's π, prompt by prompt
    evaluation = pd.read_parquet(tmp_path / "run" / "suppress" / "eval.parquet")
    before = evaluation[evaluation["mode"] == "before"].sort_values("prompt_index")
    assert len(before) == MAX_PROMPTS
    assert before["pi_answer"].to_numpy() == pytest.approx(recall["pi_answer"].to_numpy(), abs=1e-4)

    decompose = summary["stages"]["decompose"]
    assert decompose["layer"] == 1 and math.isfinite(decompose["r2"])
    if family == "gpt_neox_parallel":
        assert decompose["solver"] == "sgd"
