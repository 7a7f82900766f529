"""What :func:`recallscope.run` returns and :func:`recallscope.open` reads back: a :class:`Study` (one
relation at one shot count) or a :class:`Sweep` (several), without torch.

A study computed in this process holds its stages' result objects; a study opened from a run
directory holds :class:`StoredResult` objects built from the directory's tables and its summary.
Both answer the same calls — ``study["patch"].to_frame()``, ``.tables()``, ``.to_dict()``,
``.plot()``, ``.head_grid()``, ``.to_array()``, ``study.claims()`` — with the same numbers, since the stored tables are
the ones the stages wrote, and ``.plot()`` draws the report's figures
(:mod:`recallscope.figures`) from them. Opening a run directory imports no torch and loads no
model (tested in a fresh interpreter).

Claims tables: :meth:`Study.claims` is the claims stage's table (one row per claim,
:data:`recallscope.claims.COLUMNS`); :meth:`Sweep.claims` stacks every cell's with ``relation`` and
``shots`` columns first; :meth:`Sweep.shot_claims` holds the claims across shot counts (C6, one
row per relation); :meth:`Sweep.grid` is the claims × cells table of verdicts (or of any column).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from . import display, verdicts
from .errors import UserError
from .figures import for_stage
from .rundir import SUMMARY, RunDir, check_summary, dumps


class StoredResult(display.ResultView):
    """A stage's result as a run directory holds it: its tables (read when first asked for) and its
    summary entry. ``n_layers`` / ``n_heads`` come from the manifest's model description."""

    def __init__(self, stage: str, rundir: RunDir, summary: dict, n_layers: int | None = None, n_heads: int | None = None):
        self.stage = stage
        self._rundir = rundir
        self._summary = summary
        self._tables: dict[str, pd.DataFrame] | None = None
        self.n_layers, self.n_heads = n_layers, n_heads

    def tables(self) -> dict[str, pd.DataFrame]:
        """The stage's tables by name: the main table first (as the stage's ``tables()`` returned it), the
        others in the order of their names (a run directory keeps no order among them)."""
        if self._tables is None:
            self._tables = self._rundir.read_tables(self.stage)
        return {name: frame.copy() for name, frame in self._tables.items()}

    def to_frame(self) -> pd.DataFrame:
        return next(iter(self.tables().values()))

    def to_dict(self) -> dict:
        return dict(self._summary)

    def figures(self) -> list:
        """Every figure the report draws for this stage (:mod:`recallscope.figures`); [] when it has none."""
        make = for_stage(self.stage)
        return make(self.tables(), self.to_dict()) if make is not None else []

    def plot(self):
        figures = self.figures()
        if not figures:
            raise ValueError(f"the {self.stage} stage draws no figure")
        return figures[0]

    def _title(self) -> str:
        return f"{self.stage} (read from {self._rundir.path})"


def _json_normal(rows: list[dict]) -> list[dict]:
    """Rows as summary.json holds them (NaN → None, NumPy → Python): an in-memory summary and one read
    back compare equal."""
    return json.loads(dumps(rows))


@dataclass
class Study:
    """One relation at one shot count: every stage's result, the summary and the prompts.

    ``results`` holds the results computed in this process; ``study[stage]`` gives that result, or
    the stage's :class:`StoredResult` when it was reused from (or only exists in) the run directory
    ``path``. ``prompts`` is every prompt built for the relation; :attr:`known` the ones the model
    knows — the prompts the pipeline hands every stage after recall. ``model`` and ``prompts`` are
    None for a study read back by :func:`open` (no model is loaded).
    """

    results: dict[str, Any]
    summary: dict
    prompts: Any = None  # tasks.PromptSet
    model: Any = None  # models.Model
    path: str | None = None
    manifest: dict = field(default_factory=dict)

    def __getitem__(self, stage: str):
        if stage in self.results:
            return self.results[stage]
        if self.path is not None and stage in self.summary.get("stages", {}) and RunDir(self.path).has_stage(stage):
            model = self.manifest.get("model") or {}
            stored = StoredResult(
                stage, RunDir(self.path), self.summary["stages"][stage], model.get("n_layers"), model.get("n_heads")
            )
            self.results[stage] = stored
            return stored
        ran = ", ".join(self.stages) or "none"
        raise KeyError(f"stage {stage!r} has not run in this study (stages: {ran})")

    def __contains__(self, stage: str) -> bool:
        return stage in self.results or stage in self.summary.get("stages", {})

    @property
    def stages(self) -> list[str]:
        """The stages that ran (or were reused), in pipeline order."""
        return list(dict.fromkeys([*self.summary.get("stages", {}), *self.results]))

    @property
    def known(self):
        """The prompts the model knows (``study["recall"].known``): what every stage after recall was given.
        A stage function called on them reproduces the run's table (``movers(study.model, study.known, config)``)."""
        if "recall" not in self.results or not hasattr(self.results["recall"], "known"):
            raise ValueError(
                "the known prompts need the recall stage's result in this process (a study read back by open() has none)"
            )
        return self.results["recall"].known

    def claims(self) -> pd.DataFrame:
        """The claims table (one row per claim, :data:`recallscope.claims.COLUMNS`): claim, verdict, the
        statistic that decided it (``decided_by``, ``decided_value``, ``decided_ci_low``,
        ``decided_ci_high``: what the CLI and the report show as the value) with its ``threshold`` and
        ``margin``, then the claim's primary figure (``measure``, ``value``, ``ci_low``, ``ci_high``), …
        Empty when the claims stage did not run."""
        if "claims" in self:
            frame = self["claims"].to_frame().reset_index(drop=True)
        else:
            frame = pd.DataFrame(_json_normal(self.summary.get("claims", [])))
        return frame[verdicts.leading_first(frame.columns)]

    def top_components(self, k: int = 5) -> pd.DataFrame:
        """The patch stage's top components by |effect| (% of π): component, layer, head, effect, ci."""
        rows = self.summary.get("stages", {}).get("patch", {}).get("top_components", [])[:k]
        return pd.DataFrame(rows, columns=["component", "layer", "head", "effect", "ci"] if not rows else None)

    def _title(self) -> str:
        s = self.summary
        where = f" · {self.path}" if self.path else ""
        return f"Study · {s.get('model')} · {s.get('relation')} · {s.get('shots')}-shot{where}"

    def _lines(self) -> list[tuple[str, str]]:
        s = self.summary
        lines = [
            (
                "prompts",
                f"{display.fmt(s.get('n_prompts'))}, known {display.fmt(s.get('n_known'))}, "
                f"accuracy {display.fmt(s.get('accuracy'))}",
            ),
            ("stages", ", ".join(self.stages)),
        ]
        top = self.top_components()
        if len(top):
            lines.append(
                ("top components (% of π)", ", ".join(f"{r.component} {display.fmt(r.effect)}" for r in top.itertuples()))
            )
        return lines

    def __repr__(self) -> str:
        claims = (
            display.claims_text(self.claims(), limit=display.MAX_LINES - 5)
            if "claims" in self or self.summary.get("claims")
            else []
        )
        text = display.text_view(self._title(), self._lines())
        return text + ("\n  " + "\n  ".join(claims) if claims else "")

    def _repr_html_(self) -> str:
        head = display.stage_html(self._title(), self._lines())
        claims = self.claims()
        return head + (display.claims_html(claims) if len(claims) else "")


def _id_order(claim_id: str) -> tuple[int, int]:
    """C1 < C2 < … < C10, then anything else."""
    return (0, int(claim_id[1:])) if claim_id[1:].isdigit() else (1, 0)


def _cell_key(summary: dict) -> tuple[str, int]:
    return str(summary.get("relation")), int(summary.get("shots") or 0)


@dataclass
class Sweep:
    """Several relations × shot counts on one model: one :class:`Study` per cell.

    ``sweep[relation, shots]`` is a cell (``relation`` as the summary names it, e.g.
    ``"country_capital_extended"``); ``cells`` maps every ``(relation, shots)`` to its study;
    ``summary`` is the sweep's combined summary (``summary.json`` of its parent directory).
    """

    cells: dict[tuple[str, int], Study]
    summary: dict
    path: str | None = None

    def __getitem__(self, key: tuple[str, int]) -> Study:
        if key in self.cells:
            return self.cells[key]
        relation, shots = key
        for (rel, k), study in self.cells.items():  # a relation given by its file path
            if k == shots and Path(str(relation)).stem == rel:
                return study
        raise KeyError(f"no cell {key!r}; cells: {', '.join(f'{r} {k}-shot' for r, k in self.cells)}")

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def incomplete(self) -> list[dict]:
        """Cells where some stage was not measurable (the CLI exits 3 for these): relation, shots, stages."""
        return list(self.summary.get("incomplete", []))

    def claims(self) -> pd.DataFrame:
        """Every cell's claims table stacked, ``relation`` and ``shots`` first (one row per cell and claim)."""
        frames = []
        for (relation, shots), study in self.cells.items():
            frame = study.claims()
            if len(frame):
                frames.append(frame.assign(relation=relation, shots=shots)[["relation", "shots", *frame.columns]])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["relation", "shots"])

    def shot_claims(self) -> pd.DataFrame:
        """The claims across shot counts (C6: few-shot prompts employ the zero-shot heads), one row per
        relation, the deciding statistic first as in :meth:`Study.claims`."""
        frame = pd.DataFrame(_json_normal(self.summary.get("claims", [])))
        return frame[verdicts.leading_first(frame.columns)]

    def grid(self, value: str = "verdict") -> pd.DataFrame:
        """The claims × cells table of ``value`` (a column of the claims table: verdict, value, margin, …):
        rows the claims, indexed by (id, claim) with the ids the report and the terminal use
        (:func:`recallscope.verdicts.claim_id`: C1 …), columns ``(relation, shots)``. The claim across
        shot counts (C6) is a relation's, not a cell's (a cell alone has it not measurable): its row holds
        the relation's shot claim in each of the relation's cells."""
        long = self.claims()
        if not len(long):
            return pd.DataFrame()
        long = long.assign(id=[verdicts.claim_id(row, i) for i, row in enumerate(long.to_dict("records"))])
        grid = long.pivot_table(index=["id", "claim"], columns=["relation", "shots"], values=value, aggfunc="first", sort=False)
        shot = self.shot_claims()
        for i, row in enumerate(shot.to_dict("records") if len(shot) and value in shot else []):
            for column in [c for c in grid.columns if c[0] == row.get("relation")]:
                grid.loc[(verdicts.claim_id(row, i), row["claim"]), column] = row[value]
        return grid.sort_index(level="id", key=lambda ids: ids.map(_id_order), sort_remaining=False)

    def _title(self) -> str:
        where = f" · {self.path}" if self.path else ""
        return f"Sweep · {self.summary.get('model')} · {len(self.cells)} cells{where}"

    def __repr__(self) -> str:
        lines = []
        for (relation, shots), study in list(self.cells.items())[: display.MAX_LINES - 3]:
            found = study.claims()["verdict"].tolist() if "claims" in study else []
            counts = ", ".join(f"{found.count(v)} {v}" for v in dict.fromkeys(found))
            lines.append(
                (
                    f"{relation} · {shots}-shot",
                    f"known {display.fmt(study.summary.get('n_known'))}" + (f"; claims: {counts}" if counts else ""),
                )
            )
        shot = self.shot_claims()
        if len(shot):
            lines.append(("across shots", ", ".join(f"{r.get('relation')}: {r.get('verdict')}" for r in shot.to_dict("records"))))
        return display.text_view(self._title(), lines, ".claims(), .grid(), .shot_claims(), sweep[relation, shots]")

    def _repr_html_(self) -> str:
        grid = self.grid()
        html = display.stage_html(self._title(), [])
        if not len(grid):
            return html
        return html + display.grid_html(grid)


def open_run(path: str | Path) -> Study | Sweep:
    """The :class:`Study` (or, for a sweep's parent directory, the :class:`Sweep`) a run directory holds,
    read from its files: no model is loaded and torch is not imported.

    ``.claims()``, ``[stage].to_frame()``, ``.tables()``, ``.plot()``, ``.head_grid()`` and ``.to_array()`` work as on the
    study :func:`recallscope.run` returned; ``.model`` and ``.prompts`` are None. UserError when
    ``path`` holds no finished run (no summary.json).
    """
    rundir = RunDir(path)
    summary = rundir.read_json("summary.json") if Path(path).is_dir() else None
    if not summary:
        raise UserError(f"{path}: no summary.json (not a finished run directory)")
    check_summary(summary, rundir.path / SUMMARY)  # its types, named in one line
    manifest = rundir.manifest() or {}
    if summary.get("runs") and any(r.get("path") for r in summary["runs"]):
        cells = {}
        for i, entry in enumerate(summary["runs"]):
            if not entry.get("path"):
                continue
            # a path read from the file: it must lead to a folder inside this one
            sub = rundir.inside(entry["path"], f"runs[{i}].path", rundir.path / SUMMARY)
            cells[_cell_key(entry)] = _open_study(sub, RunDir(sub).summary() or entry, manifest)
        return Sweep(cells=cells, summary=summary, path=str(path))
    return _open_study(Path(path), summary, manifest)


def _open_study(path: Path, summary: dict, parent_manifest: dict) -> Study:
    manifest = RunDir(path).manifest() or parent_manifest
    return Study(results={}, summary=summary, path=str(path), manifest=manifest)
