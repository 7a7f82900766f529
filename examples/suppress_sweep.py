"""Anti-overconfidence sweep: models × relations × shots, one table and one plot.

    python examples/suppress_sweep.py --models smollm2-135m --max-prompts 60 --out runs/suppress_sweep

Writes ``<out>/suppress_sweep.csv`` and ``<out>/suppress_sweep.html`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from recallscope.figures.suppress import sweep_figure
from recallscope.suppress import SuppressConfig, sweep

BUILTIN = ["paper_country_capital", "country_capital_extended", "country_language", "country_currency", "landmark_country", "city_country",
           "company_headquarters", "person_sport"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m")
    ap.add_argument("--relations", default=",".join(BUILTIN), help="names or LRE JSON paths, comma-separated")
    ap.add_argument("--shots", default="0,1,3")
    ap.add_argument("--max-prompts", type=int, default=60)
    ap.add_argument("--last-layers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="runs/suppress_sweep")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    # One model × relation × shots at a time, saving the table after each, so a long sweep on a
    # busy machine keeps what it has finished (the model loads from its cache in under a second).
    for model in args.models.split(","):
        for relation in args.relations.split(","):
            for k in [int(k) for k in args.shots.split(",")]:
                parts.append(sweep(
                    [model], [relation], [k], SuppressConfig(last_layers=args.last_layers), seed=args.seed,
                    max_prompts=args.max_prompts, device=args.device, log=lambda m: print(m, file=sys.stderr, flush=True),
                ))
                frame = pd.concat(parts, ignore_index=True)
                frame.to_csv(out / "suppress_sweep.csv", index=False)
    sweep_figure(frame).write_html(out / "suppress_sweep.html", include_plotlyjs=True)
    cols = ["model", "relation", "shots", "n_known", "n_unknown", "final_dla", "final_dla_ci_low", "final_dla_ci_high",
            "suppressors", "mode", "known_p_answer_before", "known_p_answer_after", "known_accuracy_after",
            "unknown_p_answer_before", "unknown_p_answer_after", "unknown_accuracy_after", "unknown_delta_p_wrong_top1"]
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 500, "display.precision", 3):
        print(frame[[c for c in cols if c in frame]].to_string(index=False))


if __name__ == "__main__":
    main()
