"""Relations: subject → object facts and the templates that ask for them.

One format for everything, the LRE JSON format (see ``tasks/lre/README.md``): the built-in
relations written by the project live in ``tasks/builtin/*.json``; the 18 relations of the LRE
data set (Hernandez et al. 2024, MIT licence) ship in ``tasks/lre/`` and are reached as
``lre/<name>`` (``lre/country_language``); any other file is loaded by path. Files are parsed as
data only (``json``), and every problem names the file and the field: every string must be text
(a lone UTF-16 surrogate, which JSON's ``\\ud800`` escapes can produce and no tokenizer or file
can hold, is refused), ``properties`` must be an object, and its ``demonstration_template`` a
template with one ``{}`` like the others.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import UserError

_ESCAPED = re.compile(r"\\u([0-9a-fA-F]{4})")


def unescape(text: str) -> str:
    """Undo a second level of JSON escaping ("Bras\\u00edlia" → "Brasília")."""
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)


@dataclass(frozen=True)
class Template:
    """A relation template, parsed once: the literal text around its one subject slot ``{}``.

    The one parser of templates (the loader validates with it, prompts are formatted with it),
    with ``str.format``'s grammar: ``{{`` and ``}}`` are literal braces, ``{}`` is the subject,
    and any other field (``{note}``, ``{0}``, ``{:>9}``, ``{!r}``) or a lone brace is refused.
    ``format(subject)`` equals ``text.format(subject)``, and the subject starts at character
    ``len(prefix)`` of it.
    """

    text: str  # as written in the relation file
    prefix: str  # literal text before the slot (braces unescaped)
    suffix: str  # literal text after it

    @staticmethod
    @lru_cache(maxsize=4096)
    def parse(text: str) -> "Template":
        """Raises ValueError (a reason, for the loader's message) unless ``text`` has exactly one ``{}``."""
        pieces: list[str] = []
        slots = 0
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:  # a lone '{' or '}'
            raise ValueError(f"has a lone brace ({exc}); write literal braces as '{{{{' and '}}}}'") from None
        for literal, name, spec, conversion in parsed:
            pieces.append(literal)
            if name is None:
                continue
            if name != "" or spec or conversion:
                field_text = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(f"has the field {field_text!r}; the subject slot is '{{}}' and literal braces are "
                                 "written '{{' and '}}'")
            slots += 1
            pieces.append(None)  # the slot
        if slots != 1:
            raise ValueError(f"must contain exactly one '{{}}' for the subject (it has {slots})")
        cut = pieces.index(None)
        return Template(text, "".join(pieces[:cut]), "".join(pieces[cut + 1:]))

    def format(self, subject: str) -> str:
        return self.prefix + subject + self.suffix


@dataclass(frozen=True)
class Sample:
    subject: str
    object: str


@dataclass(frozen=True)
class Relation:
    name: str
    templates: tuple[str, ...]  # few-shot templates ({} = subject)
    templates_zs: tuple[str, ...]  # zero-shot templates
    samples: tuple[Sample, ...]
    source: str  # "builtin:<name>" or a file path
    properties: dict = field(default_factory=dict, compare=False)
    description: str = ""

    def __repr__(self) -> str:
        """One line (the dataclass's own repr lists every sample)."""
        example = f"; e.g. {self.templates[0].format(self.samples[0].subject)} → {self.samples[0].object}" if self.samples else ""
        return f"Relation({self.name!r}: {len(self.samples)} samples, {len(self.templates)} templates{example})"

    def templates_for(self, shots: int) -> tuple[str, ...]:
        return self.templates_zs if shots == 0 and self.templates_zs else self.templates

    @classmethod
    def load(cls, name_or_path: str | Path) -> "Relation":
        """A built-in relation by name, or an LRE-format JSON file by path."""
        return load_relation(name_or_path)


def builtin_names() -> list[str]:
    folder = resources.files("recallscope.tasks") / "builtin"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


LRE_PREFIX = "lre/"


def lre_names() -> list[str]:
    """The LRE relations shipped with the package, as ``--relation`` names them (``lre/<name>``)."""
    folder = resources.files("recallscope.tasks") / "lre"
    return sorted(LRE_PREFIX + p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def lre_path(name: str) -> Path:
    """The file of a shipped LRE relation (``lre/country_language`` or ``country_language``)."""
    stem = name[len(LRE_PREFIX):] if name.startswith(LRE_PREFIX) else name
    return Path(str(resources.files("recallscope.tasks") / "lre" / f"{stem}.json"))


def _surrogate(text: str) -> int | None:
    """Index of the first lone UTF-16 surrogate in ``text`` (None: it is text)."""
    for i, c in enumerate(text):
        if "\ud800" <= c <= "\udfff":
            return i
    return None


def _check_text(value: object, where: str, field_name: str) -> None:
    """Every string of a relation file (recursively) is text: UserError at a lone surrogate."""
    if isinstance(value, str):
        at = _surrogate(value)
        if at is not None:
            raise UserError(
                f"{where}: {field_name} holds a lone UTF-16 surrogate (\\u{ord(value[at]):04x} at character {at}), "
                "which is not text; write the character itself or its surrogate pair"
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, where, f"{field_name} key")
            _check_text(v, where, f"{field_name}.{k}" if field_name else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text(v, where, f"{field_name}[{i}]")


def _require(data: dict, key: str, kind, where: str):
    if key not in data:
        raise UserError(f"{where}: missing field {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UserError(f"{where}: field {key!r} must be {expected}, got {type(value).__name__}")
    return value


def _template(template: object, where: str, field_name: str) -> str:
    """A template from the file, stripped, once :meth:`Template.parse` accepts it (UserError naming the field)."""
    if not isinstance(template, str):
        raise UserError(f"{where}: {field_name} must be a string, got {type(template).__name__}")
    try:
        Template.parse(template.strip())
    except ValueError as exc:
        raise UserError(f"{where}: {field_name} {exc}: {template!r}") from None
    return template.strip()


def _templates(data: dict, key: str, where: str, required: bool) -> tuple[str, ...]:
    if key not in data and not required:
        return ()
    values = _require(data, key, list, where)
    out = [_template(template, where, f"{key}[{i}]") for i, template in enumerate(values)]
    if required and not out:
        raise UserError(f"{where}: field {key!r} is empty")
    return tuple(out)


def parse_relation(data: object, where: str, source: str, default_name: str) -> Relation:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object at the top level, got {type(data).__name__}")
    _check_text(data, where, "")
    templates = _templates(data, "prompt_templates", where, required=True)
    templates_zs = _templates(data, "prompt_templates_zs", where, required=False)
    raw_samples = _require(data, "samples", list, where)
    if not raw_samples:
        raise UserError(f"{where}: field 'samples' is empty")
    samples = []
    for i, item in enumerate(raw_samples):
        if not isinstance(item, dict):
            raise UserError(f"{where}: samples[{i}] must be an object, got {type(item).__name__}")
        for key in ("subject", "object"):
            if key not in item:
                raise UserError(f"{where}: samples[{i}] is missing field {key!r}")
            if not isinstance(item[key], str):
                raise UserError(f"{where}: samples[{i}].{key} must be a string, got {type(item[key]).__name__}")
        subject, obj = unescape(item["subject"]).strip(), unescape(item["object"]).strip()
        _check_text(subject, where, f"samples[{i}].subject")  # the second level of escaping can make one too
        _check_text(obj, where, f"samples[{i}].object")
        samples.append(Sample(subject, obj))
    name = data.get("name", default_name)
    if not isinstance(name, str):
        raise UserError(f"{where}: field 'name' must be a string, got {type(name).__name__}")
    props = data.get("properties", {})
    if not isinstance(props, dict):
        raise UserError(f"{where}: field 'properties' must be object, got {type(props).__name__}")
    if "demonstration_template" in props:  # the demonstrations' template (tasks.prompts), checked like the others
        _template(props["demonstration_template"], where, "properties.demonstration_template")
    return Relation(
        name=name.replace(" ", "_"),
        templates=templates,
        templates_zs=templates_zs,
        samples=tuple(samples),
        source=source,
        properties=props,
        description=str(data.get("description", "")),
    )


def load_relation(name_or_path: str | Path) -> Relation:
    """A built-in relation by name, a shipped LRE relation (``lre/<name>``), or an LRE-format file by path."""
    text_name = str(name_or_path)
    if text_name in builtin_names():
        path = resources.files("recallscope.tasks") / "builtin" / f"{text_name}.json"
        return parse_relation(json.loads(path.read_text(encoding="utf-8")), text_name, f"builtin:{text_name}", text_name)
    if text_name.startswith(LRE_PREFIX) and not text_name.endswith(".json") and not Path(text_name).expanduser().exists():
        if text_name not in lre_names():
            raise UserError(f"unknown relation {text_name!r}; the shipped LRE relations: {', '.join(lre_names())}")
        path = lre_path(text_name)
        data = json.loads(path.read_text(encoding="utf-8"))
        return parse_relation(data, text_name, text_name, path.stem)
    path = Path(text_name).expanduser()
    if not path.is_file():
        if path.is_dir():
            raise UserError(f"relation {text_name!r} is a directory; give a relation JSON file")
        raise UserError(
            f"unknown relation {text_name!r}; built-in: {', '.join(builtin_names())}; "
            "the LRE relations as lre/<name> (lre/country_language, ...); or a path to an LRE-format JSON file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    return parse_relation(data, str(path), str(path), path.stem)
