"""The one loop "trace batches of prompts, gather per-prompt records".

Stages measure prompts batch by batch (prompts of similar length together, :func:`batches`,
so little padding) and need the results back in the prompts' order. :func:`collect` runs the
measurement on every batch and scatters each returned per-row value into one array per name.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..progress import track
from .prompts import Batch, Prompt, batches

Measure = Callable[[list[int], Batch], Mapping[str, "Tensor | np.ndarray"]]


def collect(
    prompts: Sequence[Prompt],
    pad_id: int,
    batch_size: int,
    measure: Measure,
    description: str = "",
    progress: bool = False,
) -> dict[str, Tensor | np.ndarray]:
    """``{name: [N, ...]}``: what ``measure(indices, batch)`` returns per batch row, in prompt order.

    ``measure`` gets the prompts' indices (into ``prompts``) and their left-padded :class:`Batch`
    and returns ``{name: [B, ...]}`` tensors or arrays (row r belongs to prompt ``indices[r]``).
    A name's output is allocated on its first batch with that batch's dtype (and, for tensors,
    device): torch tensors stay tensors, anything else becomes a NumPy array. A name must come
    back from every batch with the same trailing shape (ValueError otherwise); every prompt is in
    exactly one batch. ``description`` labels the progress bar (stderr) when ``progress``.
    """
    prompts = list(prompts)
    n = len(prompts)
    out: dict[str, Tensor | np.ndarray] = {}
    groups = list(batches(prompts, pad_id, batch_size))
    for indices, batch in track(groups, description, total=n, enabled=progress, unit="prompts", weight=lambda g: len(g[0])):
        values = measure(list(indices), batch)
        for name, value in values.items():
            if name not in out:
                if isinstance(value, Tensor):
                    out[name] = value.new_zeros((n, *value.shape[1:]))
                else:
                    value = np.asarray(value)
                    out[name] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
            target = out[name]
            if tuple(target.shape[1:]) != tuple(value.shape[1:]) or len(value) != len(indices):
                raise ValueError(f"collect: {name!r} has shape {tuple(value.shape)} in a batch of {len(indices)}, "
                                 f"earlier batches gave [*, {', '.join(map(str, target.shape[1:]))}]")
            if isinstance(target, Tensor):
                target[torch.as_tensor(indices, device=target.device)] = value.to(target.device, target.dtype)
            else:
                target[indices] = np.asarray(value.cpu().numpy() if isinstance(value, Tensor) else value)
    return out
