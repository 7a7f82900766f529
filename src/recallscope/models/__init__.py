"""Models: loading (embedded GGUF, hub, local), per-architecture adapters, the exact view."""

from .arch import ArchConfig, Weights
from .loading import DEFAULT_MODEL, EMBEDDED, Model, load_model, model_catalog
from .view import ModelView, Trace

__all__ = ["ArchConfig", "Weights", "DEFAULT_MODEL", "EMBEDDED", "Model", "load_model", "model_catalog", "ModelView", "Trace"]
