#!/usr/bin/env python3
"""Peak memory of each stage, measured, and the memory table of docs/scaling-out.md generated from it.

    python scripts/memory_table.py measure --model smollm2-135m --prompts 8 [--device cpu] [--dtype float32]
    python scripts/memory_table.py render

``measure`` loads the model once (made resident: every weight touched, one 2-token forward pass
to build the view's caches — all counted in the ``load`` row), then runs the default stages one at a time, in pipeline order,
in this process (each stage reads the earlier ones from a temporary run directory, as a resumed
run does) and appends one JSON line per stage to docs/scaling/memory.jsonl: the model, its
parameter count, dtype, device, prompts, the stage, ``base_mb`` (the process's memory when the
stage starts: the model and what earlier stages kept), ``peak_mb`` (the largest during the stage)
and ``stage_mb`` = peak − base, with the date, commit and load average. On CPU "memory" is the
resident set (``/proc/self/statm``, sampled every 2 ms by a thread: a peak shorter than that can be
missed; large tensors are mmap'd by the allocator and given back when freed, so one stage's
leftovers do not hide the next one's peak); on CUDA it is ``torch.cuda.max_memory_allocated``
(exact; base = allocated at the stage's start).

``render`` writes the table between the markers ``<!-- memory-table -->`` and
``<!-- /memory-table -->`` of docs/scaling-out.md from the last measurement of each (model,
dtype, device, prompts, stage): the measured rows, then rows *extrapolated* to larger models
(labelled so): weights = parameters × bytes per parameter (exact arithmetic), and each stage's
working memory scaled from the largest measured model by n_layers × d_model × prompts (the size
of the per-layer residual-stream activations the stages record), a rough guide, not a
measurement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "scaling" / "memory.jsonl"
DOC = ROOT / "docs" / "scaling-out.md"
BEGIN, END = "<!-- memory-table -->", "<!-- /memory-table -->"
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Models to extrapolate to: the paper's, by their published configurations (parameters, layers, width).
TARGETS = [
    ("gpt2-xl", 1_557_611_200, 48, 1600),
    ("meta-llama/Llama-2-7b-hf", 6_738_415_616, 32, 4096),
    ("a 70B Llama (80 layers, d 8192)", 68_976_648_192, 80, 8192),
]


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Peak:
    """The largest resident set while the block runs (sampled by a thread)."""

    def __enter__(self):
        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


class CudaPeak:
    def __enter__(self):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated() / 2**20
        return self

    def __exit__(self, *exc):
        import torch

        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated() / 2**20


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def measure(args) -> None:
    from recallscope.models import load_model
    from recallscope.pipeline import RunConfig, default_stages, execute

    load = os.getloadavg()[0]
    meter = CudaPeak if args.device.startswith("cuda") else Peak
    with meter() as loading:
        model = load_model(args.model, device=args.device, dtype=args.dtype)
        # Make the weights resident (a cached model's safetensors are memory-mapped and paged in on first
        # use) and build the view's per-layer caches with one 2-token forward pass, so that the stages'
        # figures below are their own working memory, not the model's first touch.
        import torch

        model.view.trace(torch.tensor([[1, 2]]))
        float(sum(t.detach().float().sum() for t in model.view.weights.tensors()))
    cfg = model.cfg
    params = None  # counted after the stages: transformers' module is built only then (model.hf_model)
    run = RunConfig(model=args.model, relation=args.relation, max_prompts=args.prompts, device=args.device, dtype=args.dtype)
    common = {
        "model": args.model,
        "parameters": params,
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "dtype": args.dtype,
        "device": args.device,
        "prompts": args.prompts,
        "relation": args.relation,
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_before": round(load, 2),
    }
    rows = [{**common, "stage": "load", "base_mb": loading.base, "peak_mb": loading.peak}]
    with tempfile.TemporaryDirectory() as out:
        for stage in default_stages():
            with meter() as m:
                _, summary = execute(
                    run, [stage], out=out, model=model, progress=False, overrides=dict(args.set or {}), incomplete_ok=True
                )
            if stage not in summary["stages"]:  # not measurable on these prompts: no row
                print(f"{args.model} {args.prompts} prompts {stage}: not measurable here", file=sys.stderr)
                continue
            rows.append({**common, "stage": stage, "base_mb": m.base, "peak_mb": m.peak})
            print(f"{args.model} {args.prompts} prompts {stage}: base {m.base:.0f} MB, peak {m.peak:.0f} MB", file=sys.stderr)
    params = sum(p.numel() for p in model.hf_model.parameters())
    DATA.parent.mkdir(parents=True, exist_ok=True)
    with DATA.open("a", encoding="utf-8") as handle:
        for row in rows:
            row["parameters"] = params
            row = {**row, "base_mb": round(row["base_mb"], 1), "peak_mb": round(row["peak_mb"], 1)}
            row["stage_mb"] = round(row["peak_mb"] - row["base_mb"], 1)
            handle.write(json.dumps(row) + "\n")


def _mb(x: float) -> str:
    return f"{x / 1024:.1f} GB" if x >= 1024 else f"{x:.0f} MB"


def render(_args) -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    last = {}
    for r in rows:
        last[(r["model"], r["dtype"], r["device"], r["prompts"], r["stage"])] = r
    rows = list(last.values())
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["dtype"], r["device"], r["prompts"]), {})[r["stage"]] = r
    lines = [
        "Measured (`python scripts/memory_table.py measure ...`, one process per row, the stages in pipeline order; "
        "each cell: the peak during the stage, and in brackets what the stage added above the memory it started with). "
        "`load` starts from the interpreter with torch imported and includes making the weights resident and one "
        "2-token forward pass (the view's caches).",
        "",
        "| model | parameters | dtype | device | prompts | " + " | ".join(stages) + " | measured |",
        "|---|---|---|---|---|" + "---|" * len(stages) + "---|",
    ]
    for (model, dtype, device, prompts), by_stage in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][3])):
        any_row = next(iter(by_stage.values()))
        cells = [f"{_mb(by_stage[s]['peak_mb'])} (+{_mb(by_stage[s]['stage_mb'])})" if s in by_stage else "—" for s in stages]
        lines.append(
            f"| {model} | {any_row['parameters'] / 1e6:.0f} M | {dtype} | {device} | {prompts} | "
            + " | ".join(cells)
            + f" | {any_row['date'][:10]}, commit {any_row['commit']}, load {any_row['load_before']} |"
        )
    # Extrapolation: per stage, the largest working memory per unit of n_layers × d_model × prompts measured (float32).
    work = {}
    for (_, dtype, _, prompts), by_stage in groups.items():
        for s, r in by_stage.items():
            if s != "load":
                unit = r["stage_mb"] / (r["n_layers"] * r["d_model"] * prompts) / BYTES[dtype]
                if unit >= work.get(s, (0.0, None))[0]:
                    work[s] = (unit, f"{r['model']} at {prompts} prompts")
    lines += [
        "",
        "**Extrapolated, not measured**: weights = parameters × bytes per parameter; each stage's working memory = "
        "the largest measured above per unit of n_layers × d_model × prompts × bytes per parameter, times the target's. "
        "Peak ≈ weights + the largest stage's working memory. A rough guide for sizing nodes (the stages' activations "
        "grow with the prompts' length too, and with the vocabulary for the logits); measure on the target "
        "(`--device cuda` uses CUDA's own peak counter).",
        "",
        "| model | parameters | dtype | prompts | weights | largest stage (working memory; scaled from) | peak ≈ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, params, n_layers, d_model in TARGETS:
        for dtype in ("float32", "bfloat16"):
            prompts = max(k[3] for k in groups)
            weights = params * BYTES[dtype] / 2**20
            stage, (unit, source) = max(work.items(), key=lambda kv: kv[1][0])
            mb = unit * n_layers * d_model * prompts * BYTES[dtype]
            lines.append(
                f"| {name} | {params / 1e9:.1f} B | {dtype} | {prompts} | {_mb(weights)} | {stage}: {_mb(mb)} ({source}) | "
                f"{_mb(weights + mb)} |"
            )
    text = DOC.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail, encoding="utf-8")
    print(f"wrote {DOC}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--model", required=True)
    m.add_argument("--prompts", type=int, required=True)
    m.add_argument("--relation", default="country_capital_extended")
    m.add_argument("--device", default="cpu")
    m.add_argument("--dtype", default="float32")
    m.add_argument("--set", type=lambda kv: tuple(kv.split("=", 1)), action="append", help="stage setting key=value")
    sub.add_parser("render")
    args = parser.parse_args(argv)
    (measure if args.command == "measure" else render)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
