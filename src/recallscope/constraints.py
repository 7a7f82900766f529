"""What each stage setting may hold, declared beside the config's fields, and the one check of a value.

A stage config dataclass declares, next to its fields, a class attribute
``constraints: ClassVar[dict[str, Constraint]]`` (the style of scikit-learn's
``_parameter_constraints``): ``Interval`` for numbers, ``Options`` for strings. The type of a value
comes from the field's annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
``tuple[T, ...]``, ``... | None``). :func:`coerce` parses a value given on the command line
(``--set stage.field=value``, already JSON-decoded where it was JSON) or through the library to
that type and range, or raises :class:`~recallscope.errors.UserError` with one line naming the
setting, the value and what is allowed. A scalar given for a list-typed field is a one-element
list (``--set patch.layers=5`` means layers (5,)), the same as the CLI's ``--layers 5``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from .errors import UserError


@dataclass(frozen=True)
class Interval:
    """A number between ``low`` and ``high`` (None: unbounded); ``closed`` says which ends are included."""

    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"
    why: str = ""  # where the bound comes from (shown after the range)

    def accepts(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (value > self.high or (value == self.high and self.closed in ("left", "neither"))):
            return False
        return True

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "(any finite value)"
        if self.high is None:
            return f"{'>=' if self.closed in ('both', 'left') else '>'} {_num(self.low)}"
        if self.low is None:
            return f"{'<=' if self.closed in ('both', 'right') else '<'} {_num(self.high)}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"in {left}{_num(self.low)}, {_num(self.high)}{right}" + (f" ({self.why})" if self.why else "")


def _num(value: float) -> str:
    """A bound as written: integers whole (``3,085,470``), other numbers with ``:g``."""
    return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1e4 else f"{value:g}"


@dataclass(frozen=True)
class Options:
    """One of ``values``."""

    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", tuple(values))

    def accepts(self, value) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)


Constraint = Union[Interval, Options]


def machine_memory() -> int:
    """Bytes of memory this process may use: the cgroup's ``memory.max`` where one is set, else the
    machine's physical memory (``MemTotal``); 16 GiB where neither can be read."""
    total = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as memory_max:
            limit = memory_max.read().strip()
        if limit.isdigit():
            total = min(total, int(limit)) if total else int(limit)
    except OSError:
        pass
    return total or 16 << 30


# A bootstrap resample holds, in the stages' implementations, up to ~1024 float64 values at once:
# the resampled prompts' indices and values, or (patch) one weight per prompt and the statistic of
# each of its ~300 components. So this machine's memory holds at most memory / 8 KiB resamples;
# more is refused before anything runs (--set suppress.n_bootstrap=1e11 tried to allocate 11.6 TiB).
RESAMPLE_BYTES = 8 * 1024
RESAMPLES = Interval(
    1, max(1, machine_memory() // RESAMPLE_BYTES), why=f"this machine's memory at {RESAMPLE_BYTES // 1024} KiB per resample"
)

# Any count (a batch, a number of draws, a top k): at most as many as this machine's memory holds
# 8-byte numbers; no array of more could be made (--set recall.batch_size=1e15 is refused, not tried).
COUNT_LIMIT = max(1, machine_memory() // 8)
POSITIVE = Interval(1, COUNT_LIMIT, why="this machine's memory in 8-byte numbers")  # a count: 1, 2, ...
NON_NEGATIVE = Interval(0, None)
PROBABILITY = Interval(0, 1)  # a share or threshold in [0, 1]
LEVEL = Interval(0, 1, closed="neither")  # a confidence level in (0, 1)


def _hints(config_type: type) -> dict[str, Any]:
    return typing.get_type_hints(config_type)


def _unwrap_optional(tp) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True
    return tp, False


def _kind(tp) -> str:
    if tp is bool:
        return "a boolean (true or false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"a list of {_kind(typing.get_args(tp)[0]).removeprefix('an ').removeprefix('a ')}s"
    return str(tp)


class _Refused(ValueError):
    pass


def _scalar(tp, value):
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _Refused
    if tp is int:
        if isinstance(value, bool):
            raise _Refused
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _Refused from None
        raise _Refused
    if tp is float:
        if isinstance(value, bool):
            raise _Refused
        if isinstance(value, (int, float)):
            value = float(value)
        elif isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _Refused from None
        else:
            raise _Refused
        if not math.isfinite(value):
            raise _Refused
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Refused
    if typing.get_origin(tp) is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Refused
    raise TypeError(f"no parser for settings of type {tp!r}")


def coerce(config_type: type, name: str, value: Any, setting: str | None = None, flag: bool = False) -> Any:
    """``value`` parsed to the type of field ``name`` of ``config_type`` and checked against its constraint.

    ``setting`` names the value in the error (default ``name``); ``flag``: it is a CLI flag
    (``--layer -1``), not a ``--set`` setting. Raises UserError: one line with the setting, the
    value and what is allowed.
    """
    setting = setting or name
    tp, optional = _unwrap_optional(_hints(config_type)[name])
    constraint = getattr(config_type, "constraints", {}).get(name)
    allowed = _kind(tp) + (f" {constraint.describe()}" if isinstance(constraint, Interval) else "")
    if isinstance(constraint, Options):
        allowed = constraint.describe() if typing.get_origin(tp) is not tuple else f"a list of: {constraint.describe()}"
    if optional and not flag:
        allowed += ", or null"
    given = f"{setting} {_show(value)}" if flag else f"{setting}={_show(value)}"

    def refuse() -> UserError:
        return UserError(f"{given} is not allowed: {setting} must be {allowed}")

    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise refuse()
    try:
        if typing.get_origin(tp) is tuple:
            item_tp = typing.get_args(tp)[0]
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, (list, tuple)):
                items = list(value)
            else:
                items = [value]  # a scalar for a list: a one-element list
            if not items:
                raise _Refused
            parsed = tuple(_scalar(item_tp, v) for v in items)
        else:
            parsed = _scalar(tp, value)
    except _Refused:
        raise refuse() from None
    if constraint is not None:
        for v in parsed if isinstance(parsed, tuple) else (parsed,):
            if not constraint.accepts(v):
                raise refuse()
    return parsed


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def check_config(config) -> None:
    """Every field of a config instance, through :func:`coerce` (raises UserError on the first bad one)."""
    for f in dataclasses.fields(config):
        coerce(type(config), f.name, getattr(config, f.name))


def unconstrained(config_type: type) -> list[str]:
    """Numeric and string fields (or lists of them) without a declared constraint (each should have one)."""
    out = []
    constraints = getattr(config_type, "constraints", {})
    for name, tp in _hints(config_type).items():
        if typing.get_origin(tp) is typing.ClassVar or name not in {f.name for f in dataclasses.fields(config_type)}:
            continue
        base, _ = _unwrap_optional(tp)
        if typing.get_origin(base) is tuple:
            base = typing.get_args(base)[0]
        if base in (int, float, str) and name not in constraints:
            out.append(name)
    return out
