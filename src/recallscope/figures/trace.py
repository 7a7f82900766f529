"""The trace stage's plots under its stage name (the report finds ``figures/<stage>.py``); they
live in :mod:`recallscope.figures.causal_trace`, named after the method."""

from .causal_trace import figures

__all__ = ["figures"]
