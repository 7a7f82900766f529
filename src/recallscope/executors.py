"""Executors of a sweep's cells: each (model, relation, shots) cell as one Ray task on a cluster.

:func:`recallscope.pipeline.execute_many` plans a sweep (checks every setting, builds every
cell's prompts, refuses a run directory that holds another configuration) and, when it is given
an executor, hands the runnable cells to it, then builds the combined summary, the few-shot
claims across cells and the manifest from what the cells wrote. The default (no executor) runs
the cells in-process one after the other; :class:`RayExecutor` runs each cell as one Ray task
(https://docs.ray.io/en/latest/ray-core/tasks.html) with declared resources: ``cpus_per_cell``
CPUs, and one GPU where the run's device is CUDA.

What a cluster must provide:

- recallscope (the same version) and its model files on every node (a worker loads the model
  itself; the driver loads it once too, to check settings and build the prompts);
- the run directory on a filesystem every node sees (NFS, Lustre, a mounted bucket with POSIX
  semantics): each task writes its cell's sub-run directory there, atomically, file by file, as
  the serial run does. The driver writes a token file (:data:`TOKEN_FILE`) into the run directory
  before the first task; a task that does not find the same token fails its cell with one line
  naming the node and the path (a node-local folder of the same name is caught too).

Resume and retries: a task runs :func:`recallscope.pipeline.execute` on its sub-run directory,
which reuses every stage already finished there, so rerunning the command after a crash (of the
driver, a worker or a node) redoes only what was not written. A cell whose task fails (an
exception, or its worker process or node dying) is submitted once more; a second failure stops
the sweep with one line naming the cell (the cells already written stay; rerun to resume). A
:class:`~recallscope.errors.UserError` (bad input, a node that cannot see the run directory) is
not retried: it would fail the same way again.

Ray is imported only when a :class:`RayExecutor` starts (``pip install 'recallscope[ray]'``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from .errors import UserError
from .pipeline import CellJob
from .rundir import atomic_write_text

TOKEN_FILE = ".recallscope-driver"  # in the run directory: what every task checks it can read
EXTRA = "pip install 'recallscope[ray]'"


class CellFailed(RuntimeError):
    """A cell's task failed on every try (the CLI prints this one line and exits 1)."""


def _import_ray():
    """Ray, or one line naming the extra that installs it."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise UserError(f"--executor ray needs Ray, which is not installed: {EXTRA}") from exc


def parse_executor(executor: str, ray_address: str | None) -> str | None:
    """The Ray address a ``--executor``/``--ray-address`` pair asks for: None for the serial executor,
    "" for a new local Ray cluster, else the address of an existing one ("auto", "HOST:PORT",
    "ray://HOST:PORT"). UserError for an unknown executor or two different addresses."""
    if executor == "serial":
        return ray_address
    if executor == "ray":
        return ray_address if ray_address is not None else ""
    if executor.startswith("ray://"):
        if ray_address is not None and ray_address != executor:
            raise UserError(f"--executor {executor} and --ray-address {ray_address} name two clusters; give one")
        return executor
    raise UserError(f"--executor must be serial, ray or ray://HOST:PORT, got {executor!r}")


def check_shared(root: str, token: str) -> None:
    """Raise UserError when this process cannot read the driver's ``token`` in the run directory ``root``."""
    path = Path(root) / TOKEN_FILE
    try:
        found = path.read_text(encoding="utf-8").strip()
    except OSError:
        found = None
    if found != token:
        what = "cannot read" if found is None else "reads another run's"
        raise UserError(f"node {socket.gethostname()} {what} {path}: the run directory must be on a filesystem every node shares")


def run_cell(job: CellJob, root: str, token: str, cwd: str) -> tuple[dict, list[str], str, float]:
    """One cell on a worker: check the shared run directory, then run (or resume) it.

    Returns the cell's summary, its progress lines, the node's host name and the wall seconds.
    ``cwd``: the driver's working directory, entered where this node has it (so that a relative
    model path means what it meant on the driver).
    """
    start = time.perf_counter()
    check_shared(root, token)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    lines: list[str] = []
    summary = job(log=lines.append)
    return summary, lines, socket.gethostname(), time.perf_counter() - start


class RayExecutor:
    """Run a sweep's cells as Ray tasks (one task per cell), on a new local cluster or an existing one.

    ``address``: "" (or None) starts a local Ray cluster in this process (``num_cpus`` CPUs, default
    all of them); "auto", "HOST:PORT" or "ray://HOST:PORT" connects to a running one
    (``ray.init(address=...)``). ``cpus_per_cell``: the CPUs each task declares (and the torch
    threads it uses); a CUDA run's task also declares one GPU. ``retries``: how many times a failed
    cell is submitted again (1: once).
    """

    def __init__(self, address: str | None = "", cpus_per_cell: int = 1, num_cpus: int | None = None, retries: int = 1):
        if cpus_per_cell < 1:
            raise UserError(f"--cpus-per-cell must be >= 1, got {cpus_per_cell}")
        self.address = address or None
        self.cpus_per_cell = cpus_per_cell
        self.num_cpus = num_cpus
        self.retries = retries
        self.ray = _import_ray()

    def _init(self) -> None:
        if self.ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": False, "include_dashboard": False}
        if self.address is None:
            if self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            # A local cluster's workers inherit this process's environment (PYTHONPATH, HF_HOME, ...).
        else:
            kwargs.pop("include_dashboard")
        try:
            self.ray.init(**kwargs)
        except ConnectionError as exc:
            raise UserError(f"--ray-address {self.address}: no Ray cluster answers there ({exc})") from exc

    def run(self, cells: list[CellJob], root: str, log: Callable[[str], None]) -> list[dict]:
        """Every cell's summary, in the order of ``cells`` (see the module docstring for retries)."""
        if not cells:
            return []
        ray = self.ray
        root = str(Path(root).resolve())
        token = uuid.uuid4().hex
        atomic_write_text(Path(root) / TOKEN_FILE, token + "\n")
        self._init()
        cwd = os.getcwd()
        remote = ray.remote(run_cell)
        gpu = any(str(c.run.device).startswith("cuda") for c in cells)
        options = {
            "num_cpus": self.cpus_per_cell,
            "num_gpus": 1 if gpu else 0,
            "max_retries": 0,  # retries are the driver's (below): a UserError is not retried, the rest once
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(self.cpus_per_cell)}},
        }
        jobs = [dataclasses.replace(c, out=str(Path(c.out).resolve())) for c in cells]
        name = {i: f"{Path(c.run.relation).stem}, {c.run.shots}-shot" for i, c in enumerate(jobs)}
        tries = dict.fromkeys(range(len(jobs)), 0)
        pending = {remote.options(**options).remote(job, root, token, cwd): i for i, job in enumerate(jobs)}
        results: dict[int, dict] = {}
        log(
            f"ray: {len(jobs)} cells as tasks of {self.cpus_per_cell} CPU{'s' if self.cpus_per_cell > 1 else ''}"
            + (" and 1 GPU" if gpu else "")
            + f" on {ray.cluster_resources().get('CPU', 0):g} CPUs"
        )
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                summary, lines, host, seconds = ray.get(ready[0])
            except Exception as exc:  # a task's exception, or its worker / node lost
                cause = _cause(exc)
                if isinstance(cause, UserError):
                    raise UserError(f"cell {name[i]}: {cause}") from None
                reason = f"{type(cause).__name__}: {' '.join(str(cause).split())[:300]}"
                if tries[i] < self.retries:
                    tries[i] += 1
                    log(f"ray: cell {name[i]} failed ({reason}); retrying")
                    pending[remote.options(**options).remote(jobs[i], root, token, cwd)] = i
                    continue
                raise CellFailed(
                    f"cell {name[i]} failed {tries[i] + 1} times, last: {reason}; the finished cells are kept, rerun to resume"
                ) from exc
            results[i] = summary
            for line in lines:
                log(f"  {name[i]}: {line}")
            log(f"ray: cell {name[i]} done on {host} in {seconds:.1f} s ({len(results)}/{len(jobs)})")
        return [results[i] for i in range(len(jobs))]


def _cause(exc: BaseException) -> BaseException:
    """The exception raised inside a task (Ray wraps it), else ``exc`` itself (a lost worker)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
