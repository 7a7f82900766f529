"""Checks of a loaded model before anything is computed with it: its weights are finite, its
config's fields have their types. Apart from :mod:`.arch` on purpose: the view cache's key hashes
arch.py's source, and these checks do not change what a view computes.

Any weights can be checked, whatever route loaded them (embedded, local folder, hub, a model
already in memory): :func:`nonfinite` takes a :class:`~.arch.Weights`.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Literal

import torch
from torch import Tensor

from .arch import ArchConfig, LayerWeights, Norm, Weights


def named_tensors(obj, prefix: str = ""):
    """``(name, tensor)`` for every tensor of a :class:`~.arch.Weights` tree, named by its path
    (``layers.3.W_Q``, ``ln_final.weight``, ``extras.x``)."""
    if isinstance(obj, Tensor):
        yield prefix, obj
    elif isinstance(obj, (Weights, LayerWeights, Norm)):
        for key, value in vars(obj).items():
            yield from named_tensors(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from named_tensors(value, f"{prefix}.{i}")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from named_tensors(value, f"{prefix}.{key}")


def nonfinite(weights: Weights) -> tuple[str, int, int, int] | None:
    """The first tensor holding a NaN or an infinity, as ``(name, n_nan, n_inf, n_elements)``;
    None when every tensor is finite. One float64 sum per tensor: the sum is finite only when no
    element is NaN or infinite (float64 cannot overflow on a sum of finite float32/16 weights of
    any model's size), so only a tensor whose sum is not finite is counted element by element
    (smollm2-135m: ~0.1 s for its 135 M weights)."""
    for name, t in named_tensors(weights):
        if not t.is_floating_point() or t.numel() == 0 or bool(torch.isfinite(t.sum(dtype=torch.float64))):
            continue
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        if n_nan or n_inf:
            return name, n_nan, n_inf, t.numel()
    return None


def config_type_errors(cfg: ArchConfig) -> list[str]:
    """Fields of ``cfg`` whose value has the wrong type or is not finite (``norm_eps = 'x'``: a
    config file with a wrong-typed field that the model's own loader accepted); empty when right."""
    out = []
    for name, tp in typing.get_type_hints(ArchConfig).items():
        value = getattr(cfg, name)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is int:
            allowed: tuple = (int,)
        elif tp is float:
            allowed = (int, float)
        elif tp is bool:
            allowed = (bool,)
        elif tp is str or origin is Literal:
            allowed = (str,)
        elif origin in (typing.Union, types.UnionType) and set(args) <= {int, float, type(None)}:
            allowed = (int, float, type(None))
        else:
            continue
        if (
            (isinstance(value, bool) and bool not in allowed)
            or not isinstance(value, allowed)
            or (origin is Literal and value not in args)
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            out.append(f"{name} = {value!r} ({type(value).__name__})")
    return out
