"""Causal tracing and attention knockout on smollm2-135m, the paper task, 0-shot: writes docs/trace.md
and its figures (docs/trace_*.png).

    python scripts/trace_docs.py                      # --max-prompts 16, ROME's n = 10 noise samples
    python scripts/trace_docs.py --max-prompts 40 --n-samples 10

It runs ``recallscope run --stages recall,patch,movers,trace,knockout,claims`` in a child process into
a temporary run directory (patch and movers only so that the knockout curve can be read against the
layers of the heads patching singles out as movers, and claims for the two rows these stages add), draws the stages' own figures (``recallscope.figures.causal_trace`` / ``knockout``, the
ones the HTML report shows) from the run's tables, exports them as PNG with plotly.js in the
headless Chromium that the browser tests use (Playwright; ``Plotly.toImage``: kaleido is not
installed), and writes one sentence per figure on where its peak is. Every figure in the page is
read from the run's tables and summary; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import pandas as pd  # noqa: E402
import plotly.offline  # noqa: E402

from recallscope.figures import causal_trace as trace_figures  # noqa: E402
from recallscope.figures import knockout as knockout_figures  # noqa: E402
from recallscope.rundir import RunDir  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
KINDS = {"resid": "residual stream", "mlp": "MLP window", "attn": "attention window"}
NAMES = ("trace_resid.png", "trace_mlp.png", "trace_attn.png", "trace_groups.png", "knockout.png")


def run_stages(out: Path, max_prompts: int, n_samples: int, seed: int) -> list[str]:
    cmd = [
        "recallscope",
        "run",
        "--model",
        "smollm2-135m",
        "--relation",
        "paper_country_capital",
        "--shots",
        "0",
        "--max-prompts",
        str(max_prompts),
        "--seed",
        str(seed),
        "--stages",
        "recall,patch,movers,trace,knockout,claims",
        "--set",
        f"trace.n_samples={n_samples}",
        "--no-report",
        "--out",
        str(out),
        "--json",
    ]
    proc = subprocess.run([sys.executable, "-m", "recallscope", *cmd[1:]], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return cmd


def _pct(x: float) -> str:
    return f"{x:.1f}%"


def _span(values: list[int]) -> str:
    """[3, 4, 5, 9] -> '3–5, 9'."""
    parts, run = [], []
    for v in sorted(values):
        if run and v != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(v)
    if run:
        parts.append(run)
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in parts) or "none"


def trace_sentence(grouped: pd.DataFrame, kind: str, window: int) -> str:
    """Where the mean indirect effect of ``kind`` peaks (overall, at the last subject token, at the last token)."""
    g = grouped[grouped["kind"] == kind]

    def where(layer: int) -> str:
        return f"r[{layer}]" if kind == "resid" else f"the window centred on layer {layer}"

    top = g.loc[g["mean_indirect_effect"].idxmax()]
    # groups that share the peak (a one-token subject is the first and the last subject token)
    tied = g[(g["layer"] == top["layer"]) & (g["mean_indirect_effect"] == top["mean_indirect_effect"])]["group"].tolist()
    parts = [
        f"Restoring the {KINDS[kind]}{'' if kind == 'resid' else f' ({window} layers)'} helps most at the "
        f"{' and the '.join(tied)}, {where(int(top['layer']))}: mean indirect effect {top['mean_indirect_effect']:.3f} "
        f"(95% interval {top['ci_low']:.3f} to {top['ci_high']:.3f})"
    ]
    for group in ("last subject token", "last token"):
        if group in tied:
            continue
        rows = g[g["group"] == group]
        if len(rows):
            r = rows.loc[rows["mean_indirect_effect"].idxmax()]
            parts.append(f"at the {group} it peaks at {where(int(r['layer']))} ({r['mean_indirect_effect']:.3f})")
    return "; ".join(parts) + "."


def knockout_sentence(windows: pd.DataFrame, window: int) -> str:
    """Where blocking the last position's edges to the subject lowers p(Y) most, with the controls there."""
    subject = windows[windows["block"] == "subject"]
    dip = subject.loc[subject["mean_relative_change_pct"].idxmin()]
    centre = int(dip["layer"])
    below = subject[subject["ci_high"] < 0]["layer"].astype(int).tolist()
    controls = []
    for block, name in (("non_subject", "the non-subject positions"), ("last", "the last position itself")):
        row = windows[(windows["block"] == block) & (windows["layer"] == centre)]
        if len(row):
            controls.append(f"{name} {_pct(float(row['mean_relative_change_pct'].iloc[0]))}")
    return (
        f"Blocking the last position's edges to the subject (windows of {window} layers) lowers p(Y) most in layers "
        f"{int(dip['first_layer'])}–{int(dip['last_layer'])} (centre {centre}): {_pct(dip['mean_relative_change_pct'])} "
        f"(95% interval {_pct(dip['ci_low'])} to {_pct(dip['ci_high'])}); blocking, in the same window, "
        + " and ".join(controls)
        + f"; the subject curve's interval lies below 0 for window centres {_span(below)}."
    )


def gqa_sentence(model: dict) -> str:
    """Which edges are blocked on this model (every query head's; grouped-query keys/values unchanged)."""
    heads, kv = model.get("n_heads"), model.get("n_kv_heads")
    shared = (
        f" ({heads} query heads share {kv} key/value heads: the keys and values are unchanged, other positions still read them)"
        if heads and kv and kv < heads
        else ""
    )
    return f"In every layer of the window the edges from the last position's query of every head are blocked{shared}."


def movers_sentence(stages: dict) -> str:
    """The heads whose layers the knockout claim reads, with whether they pass the movers test."""
    from recallscope.claims import ClaimsConfig, patching_movers

    heads = patching_movers(stages.get("movers"), ClaimsConfig())
    names = [f"L{h['layer']}H{h['head']}" + ("" if h.get("is_mover") else " (fails the movers test)") for h in heads]
    return f"the top {len(heads)} by |patching effect|: " + ", ".join(names) if heads else "none"


CLAIM_COLUMNS = ("claim", "verdict", "value", "ci_low", "ci_high", "about", "detail")


def claims_section(claims: pd.DataFrame) -> list[str]:
    """The claims rows the two localisations add, as the run's claims table states them."""
    rows = claims[claims["stage"].isin(["trace", "knockout"])]
    out = [
        "## Claims rows",
        "",
        "The rows the two stages add to the run's claims table (rules in `recallscope.causal_trace."
        "mlp_peak_claim` and `recallscope.knockout.reads_subject_claim`):",
        "",
        "| claim | verdict | value | 95% interval | where | detail |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in rows.iterrows():
        out.append(
            f"| {r['claim']} | {r['verdict']} | {r['value']:.4g} | {r['ci_low']:.4g} to {r['ci_high']:.4g} | "
            f"{r['about'] or ''} | {str(r['detail']).replace('|', '/')} |"
        )
    return [*out, ""]


def export_png(figures: list, paths: list[Path], width: int = 1000, height: int = 520) -> None:
    """PNG files of plotly figures, drawn by plotly.js (``Plotly.toImage``) in headless Chromium, offline."""
    from playwright.sync_api import sync_playwright

    specs = [json.loads(f.to_json()) for f in figures]
    page_html = (
        "<!doctype html><html><head><meta charset='utf-8'><script>" + plotly.offline.get_plotlyjs() + "</script></head>"
        "<body><script>window.specs = " + json.dumps(specs) + ";</script></body></html>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "figures.html"
        page_path.write_text(page_html)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.goto(page_path.as_uri(), wait_until="load", timeout=60_000)
                urls = page.evaluate(
                    "async ([w, h]) => { const out = []; for (const s of window.specs) {"
                    " out.push(await Plotly.toImage({data: s.data, layout: s.layout}, {format: 'png', width: w, height: h})); }"
                    " return out; }",
                    [width, height],
                )
            finally:
                browser.close()
    for url, path in zip(urls, paths, strict=True):
        path.write_bytes(base64.b64decode(url.split(",", 1)[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-prompts", type=int, default=16)
    parser.add_argument("--n-samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = run_stages(out, args.max_prompts, args.n_samples, args.seed)
        rundir = RunDir(out)
        stages = rundir.summary()["stages"]
        trace_tables, knock_tables = rundir.read_tables("trace"), rundir.read_tables("knockout")
        claims = rundir.read_table("claims")
        model = rundir.manifest()["model"]
    ts, ks = stages["trace"], stages["knockout"]
    figs = trace_figures.figures(trace_tables, ts) + knockout_figures.figures(knock_tables, ks)
    args.docs.mkdir(parents=True, exist_ok=True)
    export_png(figs, [args.docs / name for name in NAMES])
    grouped, windows = trace_tables["grouped"], knock_tables["windows"]
    shown = " ".join(c if " " not in c else repr(c) for c in cmd).replace(str(out), "run")
    lines = [
        "# Causal tracing and attention knockout on smollm2-135m",
        "",
        "<!-- generated by scripts/trace_docs.py: do not edit by hand -->",
        "",
        f"The paper task (`paper_country_capital`), 0-shot, smollm2-135m: {ts['n_prompts']} prompts the model knows "
        f"(of `--max-prompts {args.max_prompts}` sampled with seed {args.seed}). Produced by `python scripts/trace_docs.py "
        f"--max-prompts {args.max_prompts} --n-samples {args.n_samples}`, which runs",
        "",
        f"    {shown}",
        "",
        "## Causal tracing (Meng et al. 2022, ROME)",
        "",
        f"The subject tokens' input embeddings get Gaussian noise, σ = {ts['noise']:.4g} ({ts['noise_rule']}), "
        f"n = {ts['n_samples']} noise samples per prompt (ROME's default: 10); mean p(Y) falls from {ts['mean_p_clean']:.4f} "
        f"(clean) to {ts['mean_p_corrupted']:.4f} (noised), a mean total effect of {ts['mean_total_effect']:.4f}. "
        "Each cell is the mean over prompts of the indirect effect p(restored) − p(noised) of restoring one clean state, "
        "positions grouped as ROME groups them; the line plot adds 95% bootstrap intervals over prompts.",
        "",
    ]
    for kind, name in zip(("resid", "mlp", "attn"), NAMES[:3], strict=True):
        lines += [f"![{KINDS[kind]}]({name})", "", trace_sentence(grouped, kind, int(ts["window"])), ""]
    lines += [f"![every group with intervals]({NAMES[3]})", ""]
    lines += [
        "## Attention knockout (Geva et al. 2023)",
        "",
        f"The last position's attention edges to a set of positions are blocked in a window of {ks['window']} layers "
        f"({ks['window_rule']}), for every window; the curve is the mean relative change of p(Y) with 95% bootstrap "
        f"intervals. {gqa_sentence(model)} The dotted lines mark the layers of the heads patching singles out as "
        f"movers ({movers_sentence(stages)}).",
        "",
        f"![attention knockout]({NAMES[4]})",
        "",
        knockout_sentence(windows, int(ks["window"])),
        "",
        "The non-subject control blocks the first position too; a model that parks much of the last position's attention "
        "there (an attention sink) loses p(Y) under that control in most windows, whatever it reads from the subject "
        "(`recallscope.knockout`'s docstring).",
        "",
    ]
    lines += claims_section(claims)
    (args.docs / "trace.md").write_text("\n".join(lines))
    print(f"wrote {args.docs / 'trace.md'} and {len(NAMES)} figures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
