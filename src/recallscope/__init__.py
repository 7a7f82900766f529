"""recallscope: how a transformer language model recalls a fact (Lv et al. 2024), end to end.

    import recallscope
    study = recallscope.run(relation="country_capital_extended", shots=3)   # every stage
    study["patch"].to_frame(); study["movers"].plot(); study.claims()

Per stage: ``recallscope.recall``, ``.patch``, ``.movers``, ``.decompose``, ``.intercept``,
``.suppress``, ``.claims`` (modules, each with its function, config dataclass and result).

Importing the package imports no torch: ``run``, ``load_model``, ``Model``, ``Relation`` and
``build_prompts`` are loaded on first use (PEP 562), so ``import recallscope.report`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import UserError
from .version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from .models import DEFAULT_MODEL, Model, load_model
    from .pipeline import Study, run
    from .tasks import Relation, build_prompts


def __getattr__(name: str):
    """The names that need torch, loaded on first use (each branch imports its module explicitly)."""
    if name in ("run", "Study"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("DEFAULT_MODEL", "Model", "load_model"):
        from . import models

        return getattr(models, name)
    if name in ("Relation", "build_prompts"):
        from . import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'recallscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["__version__", "UserError", "DEFAULT_MODEL", "Model", "load_model", "Relation", "build_prompts", "run", "Study"]
