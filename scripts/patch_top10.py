"""Path vs total patching on smollm2-135m, top 10 components side by side; prints docs/patch.md.

    python scripts/patch_top10.py > docs/patch.md
    python scripts/patch_top10.py --max-prompts 60 > docs/patch.md   # a subsample, said so in the page
    python scripts/patch_top10.py --max-prompts 30 --jobs 4 > docs/patch.md   # four runs at a time

For each case (paper_country_capital — the paper's nations and capitals, recallscope's lead-ins — and
one LRE relation, country_capital_city, each at 0 and 3 shots) it runs
``recallscope patch`` twice in child processes, into temporary run directories:

- total: recallscope's defaults (every later component recomputes, same-length corruptions
  per prompt, mean of per-prompt ratios, the prompts the model knows);
- path: the paper's definitions (``presets.PAPER``'s patch settings: every head frozen,
  dataset-mean senders, ratio of means, every prompt).

and prints both top-10 lists, what they share, and the commands. Then, on paper_country_capital
at 0 and 3 shots, ``recallscope patch --preset paper`` twice — with the preset's sender mean (the
authors': averaged at each absolute position of the right-padded corrupted texts) and with
recallscope's own-end mean (``--set patch.sender_mean=dataset``) — on every prompt of the task (the
preset's, whatever ``--max-prompts`` says), and prints both top-10 lists, their overlap, the Spearman
ρ over every component, the largest change and where L23H4 (the strongest mover head on this
model) ranks. Every figure is read from the runs' summaries and components tables.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from recallscope.presets import PAPER  # noqa: E402

LRE = "lre/country_capital_city"  # the LRE relation the package ships (src/recallscope/tasks/lre)
CASES = [
    ("paper_country_capital", 0),
    ("paper_country_capital", 3),
    (LRE, 0),
    (LRE, 3),
]
TOTAL: list[str] = ["--set", "patch.attribution=false"]
PATH: list[str] = [a for k, v in PAPER.stage_settings().items() if k.startswith("patch.") for a in ("--set", f"{k}={v}")]
# the paper preset itself, with the authors' sender mean and with recallscope's own-end mean
MEAN_CASES = [("paper_country_capital", 0), ("paper_country_capital", 3)]
AUTHORS_MEAN: list[str] = ["--preset", "paper"]
OWN_END_MEAN: list[str] = ["--preset", "paper", "--set", "patch.sender_mean=dataset"]
WATCHED = "L23H4"  # the strongest mover head of smollm2-135m in every list above


def run(relation: str, shots: int, extra: list[str], max_prompts: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "recallscope",
            "patch",
            "--relation",
            relation,
            "--shots",
            str(shots),
            "--top-k",
            "10",
            "--out",
            str(Path(tmp) / "run"),
            "--json",
            *extra,
        ]
        if max_prompts:
            cmd += ["--max-prompts", str(max_prompts)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-2000:]}")
        out = json.loads(proc.stdout)
        # every component's headline effect and the model's depth, for the sentences under each table
        run_dir = Path(tmp) / "run"
        components = pd.read_parquet(run_dir / "patch" / "components.parquet")
        out["effects"] = dict(zip(components["component"], components["effect"].astype(float), strict=True))
        out["n_layers"] = json.loads((run_dir / "manifest.json").read_text())["model"]["n_layers"]
        return out


def command(relation: str, shots: int, extra: list[str], max_prompts: int | None) -> str:
    tail = f" --max-prompts {max_prompts}" if max_prompts else ""
    return f"recallscope patch --relation {relation} --shots {shots}{tail} " + " ".join(extra)


def differs(total: dict, path: dict, n_layers: int | None) -> str:
    """Generated sentences: what the two top-10 lists share, which components only one has, and why.

    ``total`` / ``path`` are the two runs' ``--json`` outputs (``effects``: every component's
    headline effect, when the run directory could be read). Path mode keeps only the sender's
    direct write and what the end-position MLPs above it make of it; total mode also what later
    heads carry or offset. A component in the last layer has no head after it, so its move
    between the lists can only come from the other definitions path mode uses.
    """
    tp, pp = total["stages"]["patch"], path["stages"]["patch"]
    t = [c["component"] for c in tp["top_components"]]
    p = [c["component"] for c in pp["top_components"]]
    shared = [c for c in t if c in p]
    only_total = [c for c in tp["top_components"] if c["component"] not in p]
    only_path = [c for c in pp["top_components"] if c["component"] not in t]

    def listed(items, other: dict | None, mode: str) -> str:
        if not items:
            return "none"
        names = ", ".join(
            c["component"] + (f" ({mode}: {other[c['component']]:+.2f}%)" if other and c["component"] in other else "")
            for c in items
        )
        lo, hi = min(c["layer"] for c in items), max(c["layer"] for c in items)
        return f"{names} ({f'layer {lo}' if lo == hi else f'layers {lo}–{hi}'})"

    n_prompts = total.get("n_prompts", pp["n_prompts"])
    n_unknown = n_prompts - tp["n_prompts"] - tp["n_dropped_no_corruption"]
    last = [c["component"] for c in only_total + only_path if n_layers is not None and c["layer"] == n_layers - 1]
    text = (
        f"{len(shared)} of the 10 are in both lists ({', '.join(shared) or 'none'}). Only in total mode: "
        f"{listed(only_total, path.get('effects'), 'path')}; only in path mode: {listed(only_path, total.get('effects'), 'total')}. "
        "Why they can differ: path mode counts a component's direct write and what the end-position MLPs above it "
        "make of it (every head frozen), total mode also what later heads carry or offset"
    )
    if last:
        text += (
            f"; {', '.join(last)} {'is' if len(last) == 1 else 'are'} in the last layer, where no head follows, so "
            f"{'its' if len(last) == 1 else 'their'} move comes only from the other definitions"
        )
    return text + (
        f". Path mode also patches in the dataset-mean sender (not same-length corruptions of each prompt), takes the "
        f"ratio of means (prompts with a large π weigh more) and patches the {n_unknown} of {n_prompts} prompts the "
        "model does not know, which total mode leaves out."
    )


def ranks(result: dict) -> list[str]:
    """Every component of a run, strongest |effect| first."""
    effects = result["effects"]
    return sorted(effects, key=lambda c: -abs(effects[c]))


def mean_comparison(authors: dict, own_end: dict) -> str:
    """Generated sentences: how the authors' dataset mean changes the paper preset's top 10."""
    a, o = authors["effects"], own_end["effects"]
    names = sorted(a)
    ra, ro = ranks(authors), ranks(own_end)
    top_a, top_o = ra[:10], ro[:10]
    shared = [c for c in top_a if c in top_o]
    rho = spearmanr([a[c] for c in names], [o[c] for c in names]).statistic
    worst = max(names, key=lambda c: abs(a[c] - o[c]))
    same_order = top_a == top_o
    watched = (
        f"{WATCHED} ranks {ra.index(WATCHED) + 1} with the authors' mean ({a[WATCHED]:+.2f}%) and "
        f"{ro.index(WATCHED) + 1} with the own-end mean ({o[WATCHED]:+.2f}%)"
    )
    return (
        f"{len(shared)} of the 10 are in both lists"
        + (", in the same order" if same_order else f" ({', '.join(shared) or 'none'}), and the order differs")
        + f"; {watched}. Spearman ρ over all {len(names)} components {rho:.3f}; the largest change is {worst} "
        f"({o[worst]:+.2f}% → {a[worst]:+.2f}%, {abs(a[worst] - o[worst]):.2f} points)."
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-prompts", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="patch runs at a time (child processes)")
    args = parser.parse_args()
    mp = args.max_prompts
    # every run starts now; the page is printed in case order as the results come back
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {
            (rel, k, mode): pool.submit(run, rel, k, extra, mp)
            for rel, k in CASES
            for mode, extra in (("total", TOTAL), ("path", PATH))
        }
        futures.update({
            (rel, k, mean): pool.submit(run, rel, k, extra, None)
            for rel, k in MEAN_CASES
            for mean, extra in (("authors", AUTHORS_MEAN), ("own_end", OWN_END_MEAN))
        })
        results = {key: f.result() for key, f in futures.items()}
    print("# Patch: path patching (the paper's definitions) vs the total effect on smollm2-135m\n")
    print("Generated by `python scripts/patch_top10.py" + (f" --max-prompts {mp}" if mp else "") + " > docs/patch.md`; every")
    print(
        "figure below is read from the runs it makes"
        + (
            f" (a seeded subsample of at most {mp} prompts per case, to fit a shared machine; the same sampled prompts in both modes, of which total mode patches the known ones)"
            if mp
            else ""
        )
        + ".\n"
    )
    print("- **total** (recallscope's default): one component's output at the end position is replaced")
    print("  by its mean over same-length corruptions of the prompt (the subject swapped) and every later")
    print("  component recomputes; effect = mean over the known prompts of 100 · (π_patched − π_clean) / π_clean.")
    print("- **path** (the paper's patch definitions, `presets.PAPER`'s patch settings; the authors' `path_patching` /")
    print(
        "  `plot_path_patching`; the demonstrations are the query template's in both runs, so both start from the same prompt set):"
    )
    print("  every head's queries, keys and values are frozen to the clean run, MLPs are free, the sender's")
    print("  value is the authors' dataset mean (each prompt with its nation swapped, the clean nation allowed; the")
    print("  corrupted texts with the answer appended, right-padded, averaged at each absolute position and read at")
    print("  each clean prompt's end index), effect = 100 · (mean π_patched − mean π_clean) / mean π_clean over every prompt.\n")
    print("π(Y) = logit[Y] − mean logit; negative = the recall needs the component. Both lists rank by |effect|.\n")
    print("## Which definitions are recallscope's defaults, and why\n")
    print('recallscope\'s defaults answer "what does *this* recall depend on, prompt by prompt": the total')
    print("effect lets later components react as they do in the model; same-length corruptions of each prompt")
    print("keep every position aligned; the mean of per-prompt ratios weighs every prompt the same; only")
    print("known prompts are patched (a component cannot carry a fact the model does not recall); the movers")
    print("scatter reads the subject's last token (the one that has read the whole subject); demonstrations")
    print("use the query's template. The paper measures one route (direct and through the end-position MLPs)")
    print("with dataset means over every prompt; `--preset paper` selects those definitions (listed in")
    print("`recallscope.presets.PAPER`, each with the authors' function it follows), so both are one flag apart.\n")
    for relation, shots in CASES:
        total, path = results[(relation, shots, "total")], results[(relation, shots, "path")]
        tp, pp = total["stages"]["patch"], path["stages"]["patch"]
        source = " (LRE, `" + relation + "`)" if relation.startswith("lre/") else ""
        print(f"## {total['relation']}{source}, {shots}-shot\n")
        print(f"    {command(relation, shots, TOTAL, mp)}")
        print(f"    {command(relation, shots, PATH, mp)}\n")
        print(
            f"total: {tp['n_prompts']} known prompts of {total['n_prompts']} ({tp['n_dropped_no_corruption']} without a "
            f"same-length corruption dropped), mean π(Y) {tp['mean_pi_clean']:.2f}, engine {tp['engine_seconds']:.1f} s. "
            f"path: {pp['n_prompts']} prompts, {pp['n_corruptions']:.0f} corrupted prompts in the dataset mean, "
            f"mean π(Y) {pp['mean_pi_clean']:.2f}, engine {pp['engine_seconds']:.1f} s (timings on a shared machine).\n"
        )
        print("| rank | total: component | effect % (mean of ratios) | path: component | effect % (ratio of means) | 95% CI |")
        print("|---|---|---|---|---|---|")
        for i, (a, b) in enumerate(zip(tp["top_components"], pp["top_components"], strict=False), 1):
            print(
                f"| {i} | {a['component']} | {a['effect']:+.2f} | {b['component']} | {b['effect']:+.2f} | "
                f"[{b['ci'][0]:+.2f}, {b['ci'][1]:+.2f}] |"
            )
        print()
        print(differs(total, path, total.get("n_layers")) + "\n")
    print("## The paper preset's sender mean: the authors' against recallscope's own-end mean\n")
    print("`--preset paper` patches in the authors' dataset mean: their `path_patching` averages the cached")
    print("activations of the corrupted texts (answer appended, right-padded with the end-of-text token, no")
    print("attention mask) over prompts *at each absolute position* and reads that average at each clean prompt's")
    print("end index, so where prompt lengths differ (the lead-ins here have different lengths; demonstrations")
    print("add more) the value patched in mixes one prompt's end with other prompts' subjects, answers and")
    print("padding. recallscope's own-end mean (`patch.sender_mean=dataset`) reads every corrupted prompt at its")
    print("own end. Everything else is the preset's in both runs (every prompt of the task, the authors'")
    print("corruption draw, frozen heads, ratio of means, demonstrations \"The capital of X is Y.\").\n")
    for relation, shots in MEAN_CASES:
        authors, own_end = results[(relation, shots, "authors")], results[(relation, shots, "own_end")]
        ap, op = authors["stages"]["patch"], own_end["stages"]["patch"]
        print(f"### {authors['relation']}, {shots}-shot\n")
        print(f"    recallscope patch --relation {relation} --shots {shots} " + " ".join(AUTHORS_MEAN))
        print(f"    recallscope patch --relation {relation} --shots {shots} " + " ".join(OWN_END_MEAN) + "\n")
        print(
            f"{ap['n_prompts']} prompts, {ap['n_corruptions']:.0f} corrupted prompts in each dataset mean, mean π(Y) "
            f"{ap['mean_pi_clean']:.2f}; engine {ap['engine_seconds']:.1f} s and {op['engine_seconds']:.1f} s (a shared machine).\n"
        )
        print("| rank | authors' mean: component | effect % | own-end mean: component | effect % |")
        print("|---|---|---|---|---|")
        for i, (a, b) in enumerate(zip(ap["top_components"], op["top_components"], strict=False), 1):
            print(f"| {i} | {a['component']} | {a['effect']:+.2f} | {b['component']} | {b['effect']:+.2f} |")
        print()
        print(mean_comparison(authors, own_end) + "\n")


if __name__ == "__main__":
    main()
