"""The one name for a part of the model that a stage measures: :class:`Component`.

A component is what writes into the residual stream at one layer — an attention head's write
a[l,h] (``L23H4``), a layer's MLP output m[l] (``MLP23``), a layer's whole attention output
(``ATTN23``) — or the residual stream entering a layer r[l] (``RES23``). Every table, plot and
summary of every stage names components with :attr:`Component.label` and carries the columns
``component`` (the label), ``kind``, ``layer`` and ``head`` (pandas ``Int64``, missing for
everything that is not a head), so tables of different stages join on ``component``.

Also here, because several stages read them: :func:`head_label` (the one place a head's label
is spelled), :func:`component_columns` (the four columns of a table) and :func:`head_effects`
/ :func:`top_heads` (the heads of a patch table ranked by the run's aggregate effect).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

KINDS = ("head", "mlp", "attn", "resid")
_PREFIX = {"mlp": "MLP", "attn": "ATTN", "resid": "RES"}
_LABEL = re.compile(r"^(?:L(?P<layer>\d+)H(?P<head>\d+)|(?P<prefix>MLP|ATTN|RES)(?P<layer2>\d+))$")


def head_label(layer: int, head: int) -> str:
    """``L{layer}H{head}``, the label of head ``head`` of layer ``layer`` (both 0-based)."""
    return f"L{int(layer)}H{int(head)}"


@dataclass(frozen=True)
class Component:
    """One component: ``kind`` in :data:`KINDS`, ``layer`` (0-based), ``head`` (heads only).

    Raises ValueError for an unknown kind, a head without a head index or another kind with one.
    """

    kind: str
    layer: int
    head: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"component kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.kind == "head") != (self.head is not None):
            raise ValueError(f"a {self.kind} component {'needs' if self.kind == 'head' else 'has no'} head index")

    @property
    def label(self) -> str:
        """``L23H4``, ``MLP23``, ``ATTN23`` or ``RES23``."""
        if self.kind == "head":
            return head_label(self.layer, self.head)
        return f"{_PREFIX[self.kind]}{self.layer}"

    name = label  # the attribute the stages' code has always read

    @property
    def entry_layer(self) -> int:
        """The first layer whose input a change of this component at a position alters
        (r[l] for RES{l}, r[l+1] for a write of layer l)."""
        return self.layer if self.kind == "resid" else self.layer + 1

    @classmethod
    def parse(cls, label: str) -> "Component":
        """The component of a label (inverse of :attr:`label`); ValueError for anything else."""
        m = _LABEL.match(label.strip())
        if not m:
            raise ValueError(f"not a component label: {label!r} (expected e.g. L23H4, MLP23, ATTN23, RES23)")
        if m["layer"] is not None:
            return cls("head", int(m["layer"]), int(m["head"]))
        kind = {v: k for k, v in _PREFIX.items()}[m["prefix"]]
        return cls(kind, int(m["layer2"]))

    def __str__(self) -> str:
        return self.label


def component_columns(components: Sequence[Component]) -> dict[str, object]:
    """The columns ``component``, ``kind``, ``layer`` (int64), ``head`` (Int64) of rows naming
    ``components`` (one row each, in order): spread into a DataFrame's constructor."""
    return {
        "component": [c.label for c in components],
        "kind": [c.kind for c in components],
        "layer": np.array([c.layer for c in components], dtype=np.int64),
        "head": pd.array([c.head for c in components], dtype="Int64"),
    }


def heads(layers: Iterable[int], n_heads: int) -> list[Component]:
    """Every head of ``layers``, layer by layer."""
    return [Component("head", layer, h) for layer in layers for h in range(n_heads)]


def effect_column(patch_table: pd.DataFrame) -> str:
    """The name of a patch table's effect column (%): ``effect``; ``effect_pct`` in the per-prompt
    table of run directories written before the two tables shared one name (a stage reused from
    such a directory is read as it was written)."""
    return "effect" if "effect" in patch_table or "effect_pct" not in patch_table else "effect_pct"


def head_effects(patch_table: pd.DataFrame, values: str = "effect") -> pd.DataFrame:
    """Prompts × heads matrix of ``values`` of a patch table: the per-prompt ``effect`` (%), or
    ``delta_pi`` = ``pi_patched − pi_clean`` (logits) (columns: head labels, in the table's column
    order after pivoting; rows: ``prompt_index``, sorted). Empty without head rows."""
    rows = patch_table[patch_table["kind"] == "head"]
    if values == "delta_pi":
        rows = rows.assign(delta_pi=rows["pi_patched"] - rows["pi_clean"])
    elif values == "effect":
        values = effect_column(rows)
    return rows.pivot_table(index="prompt_index", columns="component", values=values, aggfunc="mean")


def top_heads(patch_table: pd.DataFrame, k: int | None = None) -> pd.Series:
    """The heads of a patch table ranked by |effect|, strongest first.

    ``patch_table`` is either the patch stage's ``components`` table (one row per component):
    the effect is its ``effect`` column, the aggregate the run's ``patch.aggregate`` selected
    (mean of per-prompt ratios by default, ratio of means under the ``paper`` preset, as the
    authors' ``plot_path_patching``); or the per-(component, prompt) main table: the mean of
    ``effect`` over prompts (the mean of ratios, the only aggregate it can tell without
    the run's config). Returns a Series of effects (%) indexed by :class:`Component` and named
    after the aggregate (``"ratio_of_means"`` or ``"mean_of_ratios"``; the first ``k`` when
    given); ties keep (layer, head) order. Empty when the table has no head rows.
    """
    rows = patch_table[patch_table["kind"] == "head"]
    if "prompt_index" in rows:  # per (component, prompt)
        mean, name = rows.groupby(["layer", "head"])[effect_column(rows)].mean(), "mean_of_ratios"
    else:  # the components table: ``effect`` is one of the two aggregate columns, bit for bit
        mean = rows.set_index(["layer", "head"])["effect"]
        name = "ratio_of_means" if rows["effect"].equals(rows.get("effect_ratio_of_means")) else "mean_of_ratios"
    order = np.argsort(-np.abs(mean.to_numpy()), kind="stable")
    ranked = pd.Series(
        mean.to_numpy()[order], index=[Component("head", int(l), int(h)) for l, h in mean.index[order]], dtype=float, name=name
    )
    return ranked if k is None else ranked.iloc[:k]
