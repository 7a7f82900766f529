"""What the report reads from a run directory: its manifest, summary and tables — files only.

Nothing here imports the pipeline or a stage module (and so never torch): a run directory is
rendered from its files alone, by any machine that has pandas, plotly and Jinja2.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..rundir import MANIFEST, SUMMARY, RunDir

log = logging.getLogger(__name__)

CLAIMS = "claims"


def read_tables(path: Path, stage: str) -> dict[str, pd.DataFrame] | None:
    """The tables of ``stage`` in the run directory ``path``, main table first (keyed by the
    stage's name, the others by theirs: :meth:`recallscope.rundir.RunDir.read_tables`); ``None``
    when the main table ``<stage>.parquet`` is missing."""
    run = RunDir(path)
    return run.read_tables(stage) if run.has_table(stage) else None


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; ``{}`` (with a logged warning) when missing, invalid or not an object."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("report: %s is not valid JSON; ignored", path)
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Run:
    """One run directory as the report sees it."""

    path: Path
    manifest: dict
    summary: dict

    @classmethod
    def read(cls, path: Path) -> "Run":
        return cls(path, read_json(path / MANIFEST), read_json(path / SUMMARY))

    def tables(self, stage: str) -> dict[str, pd.DataFrame] | None:
        return read_tables(self.path, stage)

    def entry(self, stage: str):
        return (self.summary.get("stages") or {}).get(stage)

    def stages(self) -> list[str]:
        """The finished stages in the order of the stage table the manifest records (stages it
        does not list after those, in the summary's order), the claims last: they read every
        other stage. Claims count as finished also when only the top-level ``claims`` list holds them."""
        found = [str(s) for s in (self.summary.get("stages") or {})]
        if CLAIMS not in found and claims_rows(self.summary):
            found.append(CLAIMS)
        order = [s for s in self.manifest_stage_order() if s in found]
        order += [s for s in found if s not in order]
        return [s for s in order if s != CLAIMS] + [s for s in order if s == CLAIMS]

    def manifest_stage_order(self) -> list[str]:
        stages = self.manifest.get("stages")
        if isinstance(stages, list):
            return [str(s.get("name")) if isinstance(s, dict) else str(s) for s in stages]
        if isinstance(stages, dict):
            return [str(s) for s in stages]
        return []

    def stage_title(self, stage: str) -> str:
        """The stage's title as the run layer recorded it in the manifest, else its name."""
        stages = self.manifest.get("stages")
        if isinstance(stages, list):
            for s in stages:
                if isinstance(s, dict) and s.get("name") == stage and isinstance(s.get("title"), str):
                    return s["title"]
        if isinstance(stages, dict) and isinstance(stages.get(stage), dict):
            title = stages[stage].get("title")
            if isinstance(title, str):
                return title
        return stage


def is_records(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, dict) for v in value)


def claims_rows(summary: dict) -> list[dict] | None:
    """The claims of a run: the summary's top-level ``claims``, else the claims stage's entry."""
    claims = summary.get(CLAIMS)
    if claims is None:
        claims = (summary.get("stages") or {}).get(CLAIMS)
    if isinstance(claims, dict):
        claims = claims.get(CLAIMS)
    return claims if is_records(claims) else None


def sub_runs(root: Path, summary: dict) -> list[Path]:
    """Sub-run directories of a parent run: the summary's ``runs[].path`` in its order, then any
    other folder below ``root`` that holds a summary.json."""
    found: list[Path] = []
    for entry in summary.get("runs") or []:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(rel, str):
            candidate = (root / rel).resolve()
            if candidate.is_relative_to(root.resolve()) and (candidate / SUMMARY).is_file() and candidate not in found:
                found.append(candidate)
    for path in sorted(root.rglob(SUMMARY)):
        folder = path.parent.resolve()
        if folder != root.resolve() and folder not in found:
            found.append(folder)
    return found
