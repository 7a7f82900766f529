"""recallscope: how a transformer language model recalls a fact (Lv et al. 2024), end to end."""

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402
from .models import DEFAULT_MODEL, Model, load_model  # noqa: E402

__all__ = ["__version__", "UserError", "DEFAULT_MODEL", "Model", "load_model"]
