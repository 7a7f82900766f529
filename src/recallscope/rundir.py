"""The run directory: manifest, summary, the Parquet tables of each stage — written atomically.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run leaves only complete files. A stage's main table is ``<stage>.parquet``, its other
tables ``<stage>/<name>.parquet``. A stage counts as finished when its tables exist
and ``summary.json`` has its entry; re-running the same command skips finished stages.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from .errors import UserError

MANIFEST = "manifest.json"
SUMMARY = "summary.json"


def _clean(value):
    """JSON-safe values: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value) -> str:
    return json.dumps(_clean(value), indent=2, ensure_ascii=False, allow_nan=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the permissions a normal file would get (mkstemp makes it 0600), then rename."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _complete_parquet(path: Path) -> bool:
    """A Parquet file starts and ends with b"PAR1" (the footer is written last): a damaged or
    truncated table is not a finished stage, and is recomputed rather than read."""
    try:
        size = path.stat().st_size
        if size < 12:
            return False
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(-4, os.SEEK_END)
            return head == b"PAR1" and handle.read(4) == b"PAR1"
    except OSError:
        return False


class RunDir:
    """One run directory for one (model, relation, shots) study."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a directory")

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parent = self.path.parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            where = f": {parent} is a file" if parent.is_file() else f" in {parent} ({exc.strerror})"
            raise UserError(f"--out {self.path}: cannot create the directory{where}") from exc
        if not os.access(self.path, os.W_OK):
            raise UserError(f"--out {self.path}: the directory is not writable")
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # leftovers of an interrupted write

    # ------------------------------------------------------------- manifest / summary
    def read_json(self, name: str) -> dict | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UserError(f"{path}: not valid JSON; delete it or rerun with --force") from exc

    def manifest(self) -> dict | None:
        return self.read_json(MANIFEST)

    def summary(self) -> dict:
        return self.read_json(SUMMARY) or {"stages": {}}

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_text(self.path / MANIFEST, dumps(manifest))

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / SUMMARY, dumps(summary))

    def check_same_config(self, identity: dict, force: bool) -> None:
        """Refuse to mix results of two configurations in one directory (unless --force)."""
        if force:
            return  # not even read: --force is the way out of a damaged manifest
        old = self.manifest()
        if not old:
            return
        before = old.get("identity", {})
        changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
        if changed:
            diffs = "; ".join(f"{k}: {before.get(k)!r} -> {identity.get(k)!r}" for k in changed)
            raise UserError(
                f"--out {self.path} holds a run with a different configuration ({diffs}); use --force to overwrite or another --out"
            )

    # ------------------------------------------------------------- stage tables
    def table_path(self, stage: str, name: str | None = None) -> Path:
        """``<stage>.parquet`` for the main table (``name`` None or the stage's name), else ``<stage>/<name>.parquet``."""
        if name is None or name == stage:
            return self.path / f"{stage}.parquet"
        return self.path / stage / f"{name}.parquet"

    def write_tables(self, stage: str, tables: dict[str, pd.DataFrame]) -> None:
        """A stage's tables: the first is its main table; the others go to ``<stage>/<name>.parquet``.

        The other tables are written first and the main table last (it marks the stage finished);
        tables of an earlier run of the stage that are not in ``tables`` are removed.
        """
        if not tables:
            raise ValueError(f"stage {stage!r} returned no table")
        names = list(tables)
        folder = self.path / stage
        for name in names[1:]:
            atomic_write_parquet(self.table_path(stage, name), tables[name])
        if folder.is_dir():
            for old in folder.glob("*.parquet"):
                if old.stem not in names[1:]:
                    old.unlink(missing_ok=True)
        atomic_write_parquet(self.table_path(stage), tables[names[0]])

    def read_table(self, stage: str, name: str | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.table_path(stage, name))

    def read_tables(self, stage: str) -> dict[str, pd.DataFrame]:
        """Every table of a stage, the main one first (under the stage's name)."""
        out = {stage: self.read_table(stage)}
        folder = self.path / stage
        if folder.is_dir():
            out.update({p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))})
        return out

    def has_table(self, stage: str, name: str | None = None) -> bool:
        return _complete_parquet(self.table_path(stage, name))

    def has_stage(self, stage: str) -> bool:
        """Every table of the stage is a complete Parquet file and the summary has its entry."""
        folder = self.path / stage
        others = list(folder.glob("*.parquet")) if folder.is_dir() else []
        return (
            _complete_parquet(self.table_path(stage))
            and all(_complete_parquet(p) for p in others)
            and stage in self.summary().get("stages", {})
        )


def without_timings(value):
    """A summary with every wall-time entry (keys containing "seconds") removed, for comparing runs:
    timings live only in the summary and the manifest, never in a table."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value
