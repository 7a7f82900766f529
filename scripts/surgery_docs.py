"""Head surgery (the mover heads ablated against random head sets) on smollm2-135m and on the two
control models: writes docs/surgery.md and its figures (docs/surgery_<metric>_<scope>.png: p(Y) and
accuracy, at the end position and at every position).

    python scripts/surgery_docs.py                    # --max-prompts 32 (the default run's sample)
    python scripts/surgery_docs.py --max-prompts 64
    python scripts/surgery_docs.py --work runs/surgery_docs   # keep the runs there (a rerun resumes them)

It runs ``recallscope run --stages recall,patch,movers,surgery,claims`` three times in child
processes, into run directories (temporary ones unless ``--work``): smollm2-135m on ``country_capital_extended`` at 0 shots,
and the controls ``planted`` and ``random`` (every prompt kept: ``recall.known_top_k=49152``) on
``paper_country_capital``. The figures are the surgery stage's own (``recallscope.figures.surgery``,
the ones the HTML report shows), drawn from the smollm2 run's tables and written as PNG the way
``recallscope report --figures`` writes them (``recallscope.report.export.save_figure``: sized so that
no title is clipped). Every number in the page is read from
the runs' tables and summaries; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import pandas as pd  # noqa: E402
from recallscope.figures import surgery as surgery_figures  # noqa: E402
from recallscope.report.export import save_figure  # noqa: E402
from recallscope.rundir import RunDir  # noqa: E402
from recallscope.surgery import CLAIM_NECESSARY  # noqa: E402

METRICS = ("p_answer", "accuracy")  # the order of recallscope.figures.surgery's figures: per metric, per scope
RUNS = (
    ("smollm2-135m", "smollm2-135m", "country_capital_extended", ()),
    ("planted", "planted", "paper_country_capital", ()),
    ("random", "random", "paper_country_capital", ("--set", "recall.known_top_k=49152")),
)


def run(out: Path, model: str, relation: str, extra: tuple[str, ...], max_prompts: int, seed: int) -> list[str]:
    cmd = [
        "recallscope", "run", "--model", model, "--relation", relation, "--shots", "0", "--max-prompts", str(max_prompts),
        "--seed", str(seed), "--stages", "recall,patch,movers,surgery,claims", *extra, "--no-report", "--out", str(out),
        "--json",
    ]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "recallscope", *cmd[1:]], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return cmd


def g(x, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and x != x) else f"{x:.{digits}g}"


def nulls_table(nulls: pd.DataFrame) -> list[str]:
    out = [
        "| scope | null | metric | movers' drop | null median | null 95th pct | p-value | smallest p | robust z | sets | exhaustive |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in nulls.itertuples():
        out.append(
            f"| {r.scope} | {r.null} | {r.metric} | {g(r.movers_drop)} | {g(r.null_median)} | {g(r.null_quantile)} | "
            f"{g(r.p_value)} | {g(r.min_p_value)} | {g(r.effect_size)} | {r.n_sets} | {'yes' if r.exhaustive else 'no'} |"
        )
    return out


def claim_rows(rows: list[tuple[str, pd.Series]]) -> list[str]:
    out = [
        "| model | verdict | value | 95% interval | decided by | margin | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        out.append(
            f"| {name} | **{r['verdict']}** | {g(r['value'], 4)} | {g(r['ci_low'], 4)} to {g(r['ci_high'], 4)} | "
            f"{r['decided_by'] or '—'} | {g(r['margin'], 4)} | {str(r['detail']).replace('|', '/')} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-prompts", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--work", type=Path, default=None, help="keep the run directories here (default: temporary)")
    args = parser.parse_args(argv)
    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, relation, extra in RUNS:
            out = (args.work or Path(tmp)) / name
            cmd = run(out, model, relation, extra, args.max_prompts, args.seed)
            rundir = RunDir(out)
            claims = rundir.read_table("claims")
            got[name] = {
                "cmd": " ".join(cmd).replace(str(out), name),
                "summary": rundir.summary()["stages"]["surgery"],
                "tables": rundir.read_tables("surgery"),
                "claim": claims[claims["claim"] == CLAIM_NECESSARY].iloc[0],
                "n_known": rundir.summary()["n_known"],
            }
    smol = got["smollm2-135m"]
    s = smol["summary"]
    figs = surgery_figures.figures(smol["tables"], s)
    args.docs.mkdir(parents=True, exist_ok=True)
    names = {(metric, scope): f"surgery_{metric}_{scope}.png" for metric in METRICS for scope in s["scopes"]}
    for fig, n in zip(figs, names.values(), strict=True):
        save_figure(fig, args.docs / n)
    nulls = smol["tables"]["nulls"]
    lines = [
        "# Head surgery: the mover heads ablated against random head sets",
        "",
        "<!-- generated by scripts/surgery_docs.py: do not edit by hand -->",
        "",
        "The paper leaves open whether the mover heads are *specially* necessary: disable them and compare with "
        "disabling other heads. The `surgery` stage (opt-in; `recallscope.surgery`) ablates the heads the movers "
        "claim names — each head's write replaced by its mean over the prompt's same-length corruptions, at the end "
        "position and at every position — and the same for random head sets of the same size: drawn from the movers' "
        "layers, and matched on the head's norm. Produced by `python scripts/surgery_docs.py "
        f"--max-prompts {args.max_prompts}`, which runs",
        "",
        *[f"    {got[name]['cmd']}" for name, *_ in RUNS],
        "",
        "## smollm2-135m, country_capital_extended, 0 shots",
        "",
        f"{s['n_prompts']} known prompts with a same-length corruption ({smol['n_known']} known). The heads: "
        f"{', '.join(s['heads'])} ({s['heads_source']}). The nulls:",
        "",
        *[f"- `{n['null']}`: {n['draw']}; {n['n_sets']} sets of {g(n['n_possible'])} possible"
          f"{' (every one)' if n['exhaustive'] else ''}; the median set's mean {s['norm']} norm is "
          f"{g(n['norm_ratio_median'])} × the movers'." for n in s["nulls"]],
        "",
        "Drops are clean − ablated, averaged over the prompts (p(Y): probability; accuracy: share of prompts); "
        "p-value = (1 + #null sets with a drop ≥ the movers') / (1 + sets); robust z = (movers' drop − null median) / "
        "(1.4826 · the null's median absolute deviation), — where the null has no spread.",
        "",
        *nulls_table(nulls),
        "",
        *[f"![{'p(Y)' if metric == 'p_answer' else 'accuracy'}, {'end position' if scope == 'end' else 'every position'}]({n})\n"
          for (metric, scope), n in names.items()],
        "## The claims row on the model and the controls",
        "",
        f"*{CLAIM_NECESSARY}* (rule: `recallscope.surgery.necessity_claim`), as each run's claims table states it:",
        "",
        *claim_rows([(name, got[name]["claim"]) for name, *_ in RUNS]),
        "",
        f"Rule: {got['smollm2-135m']['claim']['rule']}",
        "",
    ]  # fmt: skip
    (args.docs / "surgery.md").write_text("\n".join(lines))
    print(f"wrote {args.docs / 'surgery.md'} and {len(figs)} figures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
