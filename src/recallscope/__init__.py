"""recallscope: how a transformer language model recalls a fact (Lv et al. 2024), end to end.

    import recallscope as rs
    study = rs.run(relation="country_capital_extended", shots=0)    # every stage → a Study
    study["patch"].to_frame(); study["movers"].plot(); study.claims()
    sweep = rs.run(relation=["country_capital_extended", "country_language"], shots=[0, 3])   # a Sweep
    rs.open("runs/demo")                                              # a finished run, read back without the model
    model = rs.load_model(my_hf_module, tokenizer)                    # a model already in memory

Per stage, a module with its function, config dataclass and result: ``rs.recall``, ``rs.patch``,
``rs.movers``, ``rs.decompose``, ``rs.intercept``, ``rs.suppress``, ``rs.claims``,
``rs.causal_trace``, ``rs.knockout`` (e.g. ``rs.movers.movers(model, prompts, rs.movers.MoversConfig(layer=23, head=4))``).
A stage function uses the prompts it is given; the pipeline gives every stage after recall the
known prompts (``study.known``, ``rs.recall.recall(model, prompts).known``).

Importing the package imports no torch: the names and submodules above load on first use
(PEP 562), so ``import recallscope`` and ``rs.open(...)`` stay light.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from .errors import UserError
from .version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from .models import DEFAULT_MODEL, Model, load_model
    from .pipeline import run
    from .study import Study, Sweep
    from .study import open_run as open
    from .tasks import Relation, build_prompts

# Every public submodule (rs.patch, rs.movers, …) is reachable as an attribute without importing it
# first: the package's folder says which there are.
SUBMODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def __getattr__(name: str):
    """The names that need torch (or are not needed at import), loaded on first use."""
    if name == "run":
        from .pipeline import run

        return run
    if name in ("Study", "Sweep"):
        from . import study

        return getattr(study, name)
    if name == "open":
        from .study import open_run

        return open_run
    if name in ("DEFAULT_MODEL", "Model", "load_model"):
        from . import models

        return getattr(models, name)
    if name in ("Relation", "build_prompts"):
        from . import tasks

        return getattr(tasks, name)
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # sets the package attribute too
    raise AttributeError(f"module 'recallscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(SUBMODULES))


__all__ = [
    "__version__",
    "UserError",
    "DEFAULT_MODEL",
    "Model",
    "load_model",
    "Relation",
    "build_prompts",
    "run",
    "open",
    "Study",
    "Sweep",
]
