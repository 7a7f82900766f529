"""The run directory: manifest, summary, the Parquet tables of each stage and each stage's record.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run leaves only complete files. A stage's main table is ``<stage>.parquet``, its other
tables ``<stage>/<name>.parquet``, and its record ``<stage>.record.json``.

**Records.** A stage is finished when its record is on disk: written after its tables, it holds
the sha256 of each of them, the stage's resolved config, the run identity, the hash of the
prompts, the content hashes of the records of the stages it read, the recallscope version and a
hash of the code that computes the stage (the run layer fills these in), and the stage's summary
entry. While a stage is rewritten its record is absent, so no reader ever pairs a record with
tables it does not describe. ``summary.json`` and the manifest's per-stage entries are written
from the records, after them: they may lag behind the records (an interruption between the two),
never run ahead of them. A table whose bytes do not match its record is refused when read
(:class:`UserError`, one line) and recomputed by a run.

**Ownership.** recallscope writes only into a directory that does not exist yet, is empty, or
holds its own manifest (:meth:`RunDir.claim`); anything else is refused in one line naming what
is there. **One writer**: a run takes the directory's lock (:mod:`recallscope.locks`) for as long
as it writes; a second writer is refused in one line naming the holder, or waits (``--wait``).
**Containment**: every stage and table name read from the directory's files is a plain name, and
every file read resolves inside the directory (a symlink out of it is refused).

Run directories written before records existed are still read (their tables have no hashes to
check); a run in one recomputes every stage, since nothing records what made them.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd

from .errors import UserError
from .locks import FileLock, LockFileError

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
LOCK = ".recallscope.lock"
RECORD_SUFFIX = ".record.json"
RECORD_FORMAT = 1
REPORT = "report.html"
# A stage or table name read from a run directory's files: one plain path component.
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
# The temporary names this module writes (``.<file>.<random>.tmp``), and only those, are swept away
# as leftovers of an interrupted write: a user's own ``.thesis.tmp`` is not recallscope's.
_OWN_TMP = re.compile(r"^\.(manifest\.json|summary\.json|report\.html|[A-Za-z0-9][\w-]*(\.parquet|\.record\.json))\.[\w-]+\.tmp$")


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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the permissions a normal file would get (mkstemp makes it 0600), then rename."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def write_failed(path: Path, exc: OSError) -> UserError:
    """One line for a write the filesystem refused (full, read-only, no permission, ...)."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(
            f"cannot write {path}: {reason}; every file written before is complete, so rerunning the same command "
            "once there is room resumes"
        )
    return UserError(f"cannot write {path}: {reason}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file in the same folder, renamed into place: a
    reader sees the old file or the new one, never a part. A write the filesystem refuses (full,
    read-only) raises UserError naming the file; the old file is kept and no temporary file is left."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path)
    except OSError as exc:
        raise write_failed(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> str:
    """Write ``frame`` as Parquet atomically; returns the sha256 of the bytes written."""
    data = parquet_bytes(frame)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


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


def plain_name(name: object, what: str, where: object) -> str:
    """``name`` when it is one plain path component (letters, digits, ``_``, ``-``); else UserError:
    a name read from a run directory never reaches outside it (``../x``, ``/etc/x``)."""
    if not isinstance(name, str) or not _PLAIN.match(name):
        raise UserError(
            f"{where}: the {what} name {name!r} is not a plain name (a run directory's files name only files inside it)"
        )
    return name


def _own_manifest(data: object) -> bool:
    """A manifest recallscope wrote: an object with the run identity and the package versions."""
    return isinstance(data, dict) and isinstance(data.get("identity"), dict) and isinstance(data.get("versions"), dict)


class RunDir:
    """One run directory for one (model, relation, shots) study, or a sweep's parent directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a directory")
        self._lock: FileLock | None = None
        self._verified: dict[str, tuple] = {}  # stage -> (record file's stat, record) already checked

    # ------------------------------------------------------------- ownership and the lock
    def claim(self, wait: bool = False, note: Callable[[str], None] | None = None) -> None:
        """Check that recallscope may write here and, if the directory exists, take its lock.

        UserError (one line) when the directory exists, is not empty and holds no manifest of
        recallscope's (its user's files are never overwritten or swept away), or when another
        process holds the lock (:class:`~recallscope.locks.Busy`, unless ``wait``). A directory
        that does not exist yet is locked by :meth:`create`, once it is made."""
        self.check_ours()
        if self.path.is_dir():
            self.lock(wait, note)

    def check_ours(self) -> None:
        """UserError when the directory exists, is not empty and holds no manifest of recallscope's."""
        if not self.path.is_dir():
            return
        try:
            entries = sorted(os.listdir(self.path))
        except OSError as exc:
            raise UserError(f"--out {self.path}: cannot read the directory ({exc.strerror})") from exc
        entries = [e for e in entries if e != LOCK]
        if not entries:
            return
        if MANIFEST in entries:
            try:
                data = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError):
                raise UserError(f"{self.path / MANIFEST}: not valid JSON; delete it or rerun with --force") from None
            if _own_manifest(data):
                return
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise UserError(
            f"--out {self.path} is not a recallscope run directory (it holds {shown}, and no manifest.json of recallscope's); "
            "recallscope writes only into a new or empty folder or a run directory it made: choose another --out"
        )

    def lock(self, wait: bool = False, note: Callable[[str], None] | None = None) -> None:
        """Take this directory's lock (re-entrant in one process); the directory must exist."""
        if self._lock is not None:
            return
        lock = FileLock(self.path / LOCK, f"--out {self.path}")
        try:
            lock.acquire(exclusive=True, wait=wait, on_wait=note)
        except LockFileError as exc:  # a read-only directory: said as any refused write is
            raise write_failed(self.path, exc.oserror) from exc
        self._lock = lock
        if lock.taken_over and note is not None:
            from .locks import describe_holder

            note(
                f"--out {self.path}: the run of {describe_holder(lock.taken_over)} ended without finishing; continuing from its files"
            )

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def create(self, wait: bool = False, note: Callable[[str], None] | None = None) -> None:
        """Make the directory (ownership checked first), take its lock, sweep away recallscope's own
        temporary files of an interrupted write."""
        self.check_ours()
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
        self.lock(wait, note)
        for folder in [self.path, *[p for p in self.path.iterdir() if p.is_dir() and _PLAIN.match(p.name)]]:
            for stale in folder.glob(".*.tmp"):
                if _OWN_TMP.match(stale.name):
                    stale.unlink(missing_ok=True)  # leftovers of an interrupted write

    # ------------------------------------------------------------- manifest / summary
    def read_json(self, name: str) -> dict | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid JSON; delete it or rerun with --force") from exc
        except OSError as exc:
            raise UserError(f"{path}: cannot read it ({exc.strerror})") from exc
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return data

    def manifest(self) -> dict | None:
        data = self.read_json(MANIFEST)
        if data is not None and not isinstance(data.get("identity", {}), dict):
            raise UserError(f"{self.path / MANIFEST}: field 'identity' must be an object, got {type(data['identity']).__name__}")
        return data

    def summary(self) -> dict:
        """summary.json, its types checked (UserError naming the field): ``stages`` an object of
        objects, ``runs`` a list of objects."""
        data = self.read_json(SUMMARY) or {"stages": {}}
        check_summary(data, self.path / SUMMARY)
        return data

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

    def inside(self, relative: object, what: str, where: object) -> Path:
        """``self.path / relative`` when it resolves inside this directory; else UserError."""
        if not isinstance(relative, str) or not relative or os.path.isabs(relative):
            raise UserError(f"{where}: the {what} {relative!r} is not a path inside {self.path}")
        target = self.path / relative
        if not target.resolve().is_relative_to(self.path.resolve()):
            raise UserError(f"{where}: the {what} {relative!r} leads outside {self.path}")
        return target

    # ------------------------------------------------------------- stage tables
    def table_path(self, stage: str, name: str | None = None) -> Path:
        """``<stage>.parquet`` for the main table (``name`` None or the stage's name), else ``<stage>/<name>.parquet``.
        UserError for a name that is not one plain path component."""
        plain_name(stage, "stage", self.path)
        if name is None or name == stage:
            return self.path / f"{stage}.parquet"
        plain_name(name, "table", self.path)
        return self.path / stage / f"{name}.parquet"

    def record_path(self, stage: str) -> Path:
        return self.path / f"{plain_name(stage, 'stage', self.path)}{RECORD_SUFFIX}"

    def has_records(self) -> bool:
        """Whether this directory was written with stage records (older run directories have none)."""
        return any(self.path.glob(f"*{RECORD_SUFFIX}"))

    def read_record(self, stage: str) -> tuple[dict | None, str | None]:
        """``(record, None)``; ``(None, None)`` when the stage has no record; ``(None, why)`` when
        the record cannot be read as one."""
        path = self.record_path(stage)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, UnicodeDecodeError):
            return None, f"its record {path.name} is not valid JSON"
        tables = data.get("tables") if isinstance(data, dict) else None
        if (
            not isinstance(tables, dict)
            or not tables
            or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in tables.values())
            or data.get("stage") != stage
        ):
            return None, f"its record {path.name} is not a stage record"
        return data, None

    def verify(self, stage: str, record: dict) -> str | None:
        """None when every table ``record`` lists is on disk with the recorded sha256; else why not.
        UserError for a table name that is not plain or a file that resolves outside the directory."""
        for name, entry in record["tables"].items():
            path = self.table_path(stage, name)
            rel = path.relative_to(self.path).as_posix()
            if not path.is_file():
                return f"{rel} is missing"
            if not path.resolve().is_relative_to(self.path.resolve()):
                raise UserError(f"{path} leads outside {self.path}")
            if path.stat().st_size != entry.get("bytes", path.stat().st_size) or sha256_file(path) != entry["sha256"]:
                return f"{rel} does not match the sha256 its record holds (changed after recallscope wrote it)"
        return None

    def valid_record(self, stage: str) -> dict | None:
        """The stage's record when it is readable and its tables match it (checked once per file
        state); None when the stage has no record. UserError when a table does not match."""
        path = self.record_path(stage)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        state = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._verified.get(stage)
        if cached is not None and cached[0] == state:
            return cached[1]
        record, problem = self.read_record(stage)
        if record is None:
            raise UserError(f"{self.path}: stage {stage}: {problem}; rerun the command that made it")
        problem = self.verify(stage, record)
        if problem is not None:
            raise UserError(f"{self.path}: stage {stage}: {problem}; rerun the command that made it")
        self._verified[stage] = (state, record)
        return record

    def write_tables(self, stage: str, tables: dict[str, pd.DataFrame], previous: dict | None = None) -> dict[str, dict]:
        """A stage's tables: the first is its main table; the others go to ``<stage>/<name>.parquet``.

        The other tables are written first and the main table last; tables of an earlier
        version of the stage that are not in ``tables`` are removed (those its record listed, or,
        in a directory written before records, every ``<stage>/*.parquet``). Returns each table's
        ``{"file", "sha256", "bytes"}`` for the stage's record (:meth:`write_stage`); ``previous``:
        the stage's record before this write (default: the one on disk).
        """
        if not tables:
            raise ValueError(f"stage {stage!r} returned no table")
        names = list(tables)
        for name in names:
            self.table_path(stage, name)  # every name plain before anything is written
        old = previous if previous is not None else self.read_record(stage)[0]
        listed: dict[str, dict] = {}
        for name in names[1:] + names[:1]:
            path = self.table_path(stage, None if name == names[0] else name)
            data = parquet_bytes(tables[name])
            atomic_write_bytes(path, data)
            listed[stage if name == names[0] else name] = {
                "file": path.relative_to(self.path).as_posix(),
                "sha256": sha256_bytes(data),
                "bytes": len(data),
            }
        keep = {self.table_path(stage, n) for n in listed}
        if old is not None:
            stale = [self.table_path(stage, n) for n in old["tables"] if _PLAIN.match(str(n))]
        else:
            folder = self.path / stage
            stale = list(folder.glob("*.parquet")) if folder.is_dir() else []
        for path in stale:
            if path not in keep:
                path.unlink(missing_ok=True)
        return listed

    def write_stage(self, stage: str, tables: dict[str, pd.DataFrame], record: dict) -> dict:
        """Write a stage: its record removed, its tables written, then its record (``record`` plus
        ``format``, ``stage`` and each table's sha256). Returns the record as written."""
        previous, _ = self.read_record(stage)
        self.record_path(stage).unlink(missing_ok=True)
        self._verified.pop(stage, None)
        listed = self.write_tables(stage, tables, previous)
        full = {"format": RECORD_FORMAT, "stage": stage, **record, "tables": listed}
        atomic_write_text(self.record_path(stage), dumps(full))
        return json.loads(dumps(full))

    def remove_stage(self, stage: str) -> None:
        """Remove a stage's record, then the tables it lists (or, without a record, its main table
        and ``<stage>/*.parquet``)."""
        record, _ = self.read_record(stage)
        self.record_path(stage).unlink(missing_ok=True)
        self._verified.pop(stage, None)
        if record is not None:
            paths = [self.table_path(stage, n) for n in record["tables"] if _PLAIN.match(str(n))]
        else:
            folder = self.path / stage
            paths = [self.table_path(stage), *(folder.glob("*.parquet") if folder.is_dir() else [])]
        for path in paths:
            path.unlink(missing_ok=True)
        folder = self.path / stage
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    def _read_parquet(self, path: Path) -> pd.DataFrame:
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{path}: not a readable Parquet table ({first}); rerun the command that made it") from exc

    def read_table(self, stage: str, name: str | None = None) -> pd.DataFrame:
        """A table of a stage; its bytes are checked against the stage's record first (UserError
        when they differ, or when a directory with records has none for this stage)."""
        path = self.table_path(stage, name)
        if self.valid_record(stage) is None and self.has_records():
            raise UserError(f"{self.path}: stage {stage} has no record (unfinished); rerun the command that made it")
        if not path.resolve().is_relative_to(self.path.resolve()):
            raise UserError(f"{path} leads outside {self.path}")
        return self._read_parquet(path)

    def read_tables(self, stage: str) -> dict[str, pd.DataFrame]:
        """Every table of a stage, the main one first (under the stage's name): those its record
        lists, or in a directory written before records, ``<stage>/*.parquet``."""
        record = self.valid_record(stage)
        if record is not None:
            names = [stage] + [n for n in record["tables"] if n != stage]
            return {n: self._read_parquet(self.table_path(stage, n)) for n in names}
        if self.has_records():
            raise UserError(f"{self.path}: stage {stage} has no record (unfinished); rerun the command that made it")
        out = {stage: self.read_table(stage)}
        folder = self.path / stage
        if folder.is_dir():
            for p in sorted(folder.glob("*.parquet")):
                plain_name(p.stem, "table", self.path)
                out[p.stem] = self.read_table(stage, p.stem)
        return out

    def has_table(self, stage: str, name: str | None = None) -> bool:
        """The table exists and its stage is finished: the stage's record lists it (with records),
        or, in a directory written before records, the file is a complete Parquet file."""
        path = self.table_path(stage, name)
        if self.has_records() or self.record_path(stage).exists():
            record, _ = self.read_record(stage)
            return record is not None and (stage if name is None else name) in record["tables"] and path.is_file()
        return _complete_parquet(path)

    def has_stage(self, stage: str) -> bool:
        """The stage is finished: its record is on disk (with records); in a directory written
        before records, every table is a complete Parquet file and the summary has its entry."""
        if self.has_records() or self.record_path(stage).exists():
            record, _ = self.read_record(stage)
            return record is not None
        folder = self.path / stage
        others = list(folder.glob("*.parquet")) if folder.is_dir() else []
        return (
            _complete_parquet(self.table_path(stage))
            and all(_complete_parquet(p) for p in others)
            and stage in self.summary().get("stages", {})
        )

    def legacy_stage(self, stage: str) -> bool:
        """Tables of ``stage`` on disk without a record (an older recallscope, or an interrupted rewrite)."""
        folder = self.path / stage
        return not self.record_path(stage).exists() and (
            self.table_path(stage).exists() or (folder.is_dir() and any(folder.glob("*.parquet")))
        )


def relation_slug(relation: str) -> str:
    """The folder of a relation in a sweep: a file's stem (``data/capitals.json`` → ``capitals``), a
    shipped LRE relation's name (``lre/country_language`` → ``country_language``) or a built-in's
    name, with anything but letters, digits, ``-`` and ``_`` replaced (the sweep adds a content hash
    where two relations would share a folder: ``recallscope.pipeline.cell_slugs``)."""
    name = Path(relation).stem if relation.endswith(".json") else relation.rpartition("/")[2]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80] or "relation"


def check_summary(data: dict, where: object) -> None:
    """UserError naming the field when a summary's ``stages`` is not an object of objects or its
    ``runs`` not a list of objects (a summary edited by hand, or not recallscope's)."""
    stages = data.get("stages", {})
    if not isinstance(stages, dict):
        raise UserError(f"{where}: field 'stages' must be an object, got {type(stages).__name__}")
    for name, entry in stages.items():
        if not isinstance(entry, dict):
            raise UserError(f"{where}: stages.{name} must be an object, got {type(entry).__name__}")
    runs = data.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"{where}: field 'runs' must be a list of objects")


def without_timings(value):
    """A summary with every wall-time entry (keys containing "seconds") removed, for comparing runs:
    timings live only in the summary and the manifest, never in a table."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value
