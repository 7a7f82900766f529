"""Run directories built by hand, full of hostile strings, for the report tests (no model needed)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = "<script>window.__pwned=1</script>"
BREAKOUT = '"</div><img src=x onerror=alert(1)>'
IMG = "<img src=x onerror=\"window.__pwned=2\">"
END_SCRIPT = "</script><script>window.__pwned=3</script><!--"
LONG = "L" * 4999 + "<"  # 5,000 characters, the last one markup
RTL = "\u202eevil\u202c \u200fעברית\u200f"
ZWJ = "\U0001F469\u200d\U0001F469\u200d\U0001F467 fam\u200dily \u0301\u0000"
EMOJI = "Paris \U0001F5FC\ufe0f"
HOSTILE = (SCRIPT, BREAKOUT, IMG, END_SCRIPT, LONG, RTL, ZWJ, EMOJI)

HOSTILE_STAGE = "zz_hostile"  # a stage whose figures module carries raw, unescaped data strings

# The stage table as the run layer writes it into the manifest (recallscope.pipeline.manifest_stages):
# the report takes each stage's title and the stages' order from here. One title is hostile: the
# manifest is a file like any other.
STAGE_TABLE = [
    {"name": "recall", "title": "Recall — does the model know the fact?"},
    {"name": HOSTILE_STAGE, "title": HOSTILE_STAGE + " — " + SCRIPT},
    {"name": "claims", "title": "Claims — does the paper's story hold on this run?"},
]


def recall_frame() -> pd.DataFrame:
    subjects = [SCRIPT, LONG, RTL, ZWJ, "France", IMG]
    answers = [BREAKOUT, EMOJI, END_SCRIPT, "Berlin", "Paris", "Rome"]
    p = [0.05, 0.2, 0.4, 0.9, 0.77, 0.01]
    rank = [3, 1, 0, 0, 0, 7]
    return pd.DataFrame({
        "prompt_index": range(6),
        "subject": subjects,
        "answer": answers,
        "template": ["The capital of {} is"] * 6,
        "text": [f"The capital of {s} is" for s in subjects],
        "answer_token": [" " + a[:3] for a in answers],
        "top1_token": [SCRIPT, " Paris", END_SCRIPT, " Berlin", " Paris", BREAKOUT],
        "p_answer": p,
        "rank_answer": rank,
        "pi_answer": [10.0, 12.0, 15.0, 18.0, 20.0, 5.0],
        "correct": [r == 0 for r in rank],
        "known": [r == 0 for r in rank],
    })


def recall_entry(frame: pd.DataFrame, relation: str, shots: int) -> dict:
    return {
        "relation": relation,
        "shots": shots,
        "n_prompts": len(frame),
        "n_known": int(frame["known"].sum()),
        "accuracy": float(frame["correct"].mean()),
        "mean_p_answer": float(frame["p_answer"].mean()),
        "dropped": {"multi_token_clash": 2, "unknown_to_model": int((~frame["known"]).sum()), SCRIPT: 1},
        "known_rule": "rank(Y) < 1",
        "wall_seconds": 0.5,
    }


def write_run(path: Path, relation: str = END_SCRIPT, shots: int = 0, extra_stages: dict | None = None,
              claims: list | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    frame = recall_frame()
    frame.to_parquet(path / "recall.parquet", index=False)
    stages = {"recall": recall_entry(frame, relation, shots)}
    for name, (entry, table) in (extra_stages or {}).items():
        stages[name] = entry
        if table is not None:
            table.to_parquet(path / f"{name}.parquet", index=False)
    summary = {
        "model": "tiny-" + SCRIPT, "model_hash": "sha256:" + "ab" * 32, "relation": relation, "shots": shots,
        "seed": 7, "stages": stages,
        **{k: stages["recall"][k] for k in ("n_prompts", "n_known", "accuracy", "mean_p_answer")},
    }
    if claims is not None:
        summary["claims"] = claims
    manifest = {
        "identity": {"model": "tiny", "relation": relation, "shots": shots, "seed": 7, "max_prompts": None,
                     "dtype": "float32", "model_hash": summary["model_hash"]},
        "run": {"model": "tiny", "relation": relation, "shots": shots, "seed": 7, "device": "cpu", "dtype": "float32"},
        "model": {"name": "tiny", "family": BREAKOUT, "n_layers": 2, "n_heads": 4},
        "versions": {"python": "3.11", "recallscope": "0.1.0", "plotly": "x", IMG: SCRIPT},
        "stage_configs": {"recall": {"known_top_k": 1, "batch_size": 64}},
        "stages": STAGE_TABLE,
    }
    (path / "summary.json").write_text(json.dumps(summary, ensure_ascii=False), encoding="utf-8")
    (path / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return path


CLAIMS = [
    {"claim": "Mover heads move the topic (subject) to the last position", "about": "L1H2" + SCRIPT, "value": 0.81,
     "ci_low": 0.7, "ci_high": 0.9, "decided_by": "OV top-5 share, interval low", "threshold": 0.5, "margin": 0.2,
     "verdict": "holds", "detail": "the detail " + IMG},
    {"claim": "The intercept points from X to Y", "value": -0.02, "ci_low": -0.1, "ci_high": 0.05, "verdict": "does not hold",
     "margin": -0.3, "threshold": 0.3, "decided_by": "share of prompts with DLA < 0"},
    {"claim": "Few-shot moves the movers earlier", "value": None, "ci_low": None, "ci_high": None, "verdict": "not measurable"},
    {"claim": "Removing the final-layer suppressors raises confidence in the answer " + SCRIPT, "value": 0.02,
     "ci_low": -0.01, "ci_high": 0.05, "decided_by": "Δp(Y), interval low", "threshold": 0.01, "margin": -0.02,
     "verdict": "inconclusive", "prompts_needed": 140},
]
# The claims stage's sensitivity rows of the first two claims (one per condition, the primary first).
SENSITIVITY = [
    {"claim": CLAIMS[0]["claim"], "condition": "OV top-5 share, interval low", "setting": "movers.min_ov_top5_share",
     "setting_value": 0.5, "statistic": 0.7, "op": ">=", "threshold": 0.5, "margin": 0.2, "holds": True},
    {"claim": CLAIMS[0]["claim"], "condition": "scatter r " + BREAKOUT, "setting": None, "setting_value": None,
     "statistic": 0.6, "op": ">=", "threshold": 0.5, "margin": 0.1, "holds": True},
    {"claim": CLAIMS[1]["claim"], "condition": "share of b improving rank(Y), interval low", "setting": "claims.x",
     "setting_value": 0.5, "statistic": 0.6, "op": ">", "threshold": 0.5, "margin": 0.1, "holds": True},
    {"claim": CLAIMS[1]["claim"], "condition": "share of prompts with DLA < 0", "setting": "claims.y",
     "setting_value": 0.3, "statistic": 0.0, "op": ">", "threshold": 0.3, "margin": -0.3, "holds": False},
]


def _hostile_figures(tables: dict[str, pd.DataFrame], summary: dict) -> list:
    """Raw data strings straight into a figure: title, category labels, hover text, legend."""
    import plotly.graph_objects as go

    frame = next(iter(tables.values()))
    fig = go.Figure(go.Bar(x=list(frame["label"]), y=list(frame["value"]), text=list(frame["label"]),
                           name=END_SCRIPT, hovertext=list(frame["label"])))
    fig.update_layout(title="hostile " + SCRIPT + " " + IMG, xaxis_title=BREAKOUT)
    return [fig]


@pytest.fixture
def hostile_stage_module(monkeypatch):
    module = types.ModuleType(f"recallscope.figures.{HOSTILE_STAGE}")
    module.figures = _hostile_figures
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


@pytest.fixture
def hostile_run(tmp_path, hostile_stage_module) -> Path:
    """One run directory: recall + a stage with raw hostile figures + a figure-less stage + claims."""
    table = pd.DataFrame({"label": [SCRIPT, IMG, END_SCRIPT, RTL, ZWJ, EMOJI], "value": [1, 2, 3, 4, 5, 6]})
    extra = {
        HOSTILE_STAGE: ({"verdict": "a stage whose verdict is " + BREAKOUT, "wall_seconds": 1.25,
                         "top": [{"component": SCRIPT, "effect": 1.5}]}, table),
        "zz_tables": ({"layer": 3, "cv_r2": 0.91, "coefficients": [{"head": h, "c": 0.1 * h} for h in range(4)],
                       "nested": {"a": {"b": IMG}}, "wall_seconds": 2.0}, pd.DataFrame({"x": [1, 2]})),
    }
    return write_run(tmp_path / "run", extra_stages=extra, claims=CLAIMS)


@pytest.fixture
def h() -> types.SimpleNamespace:
    """The hostile strings and the run-directory builder, for the tests of this folder."""
    return types.SimpleNamespace(
        SCRIPT=SCRIPT, BREAKOUT=BREAKOUT, IMG=IMG, END_SCRIPT=END_SCRIPT, LONG=LONG, RTL=RTL, ZWJ=ZWJ, EMOJI=EMOJI,
        HOSTILE=HOSTILE, HOSTILE_STAGE=HOSTILE_STAGE, CLAIMS=CLAIMS, SENSITIVITY=SENSITIVITY, STAGE_TABLE=STAGE_TABLE,
        write_run=write_run,
    )
