"""The plots of each stage, drawn from its tables and summary: ``figures/<stage>.py`` defines
``figures(tables: dict[str, DataFrame], summary: dict) -> list[plotly Figure]``. These modules
import pandas, numpy and plotly only (never torch, never a stage module)."""
