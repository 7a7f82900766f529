"""recallscope: how a transformer language model recalls a fact (Lv et al. 2024), end to end.

    import recallscope
    study = recallscope.run(relation="country_capital_extended", shots=3)   # every stage
    study["patch"].to_frame(); study["movers"].plot(); study.claims()

Per stage: ``recallscope.recall``, ``.patch``, ``.movers``, ``.decompose``, ``.intercept``,
``.suppress``, ``.claims`` (modules, each with its function and config dataclass).
"""

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402
from .models import DEFAULT_MODEL, Model, load_model  # noqa: E402
from .tasks import Relation, build_prompts  # noqa: E402


def run(*args, **kwargs):
    """The whole study for one relation and shot count; see :func:`recallscope.pipeline.run`."""
    from .pipeline import run as _run

    return _run(*args, **kwargs)


__all__ = ["__version__", "UserError", "DEFAULT_MODEL", "Model", "load_model", "Relation", "build_prompts", "run"]
