"""Presets: named sets of definitions, so a run can measure what the paper measured.

recallscope's defaults and the paper's released code (trestad/Factual-Recall-Mechanism) differ
in a few definitions. A preset names a set of them; ``recallscope`` is the defaults (no
changes), ``paper`` selects the paper's definition wherever it differs. Each
:class:`Definition` says which setting it changes, the value, recallscope's default, and the
function of the authors' code it follows, so a manifest can list exactly what ran.

Settings are ``"<stage>.<field>"`` (a stage config field, the same keys as ``--set``) or
``"run.<field>"`` (how prompts are built: ``run.demonstrations``, ``run.relation``, ``run.max_prompts``);
:meth:`Preset.stage_settings` and :meth:`Preset.run_settings` split them. A user's own
``--set`` or flag wins over the preset's value; ``run.relation`` and ``run.max_prompts`` apply
only when no relation (no ``--max-prompts``) is given.

Why recallscope's defaults are what they are (the README's short version is in docs/patch.md):

- ``patch.mode = total``: the total effect asks what the recall *depends on*, with every later
  component free to react; path patching (heads frozen) measures one route only — direct and
  through the end-position MLPs — and is the paper's specific question.
- ``patch.sender_mean = per_prompt``: same-length corruptions of the prompt itself keep every
  position aligned, so the patched value is what *this* prompt would have had with another
  subject; a dataset mean mixes templates and shot contexts.
- ``patch.aggregate = mean_of_ratios``: every prompt weighs the same; the ratio of means lets
  the prompts with a large π dominate (both are always in the table).
- ``patch.prompts = known``: a component cannot carry a fact the model does not recall;
  unknown prompts dilute the effect (the paper's code patches every prompt).
- ``movers.subject_token = last``: in a multi-token subject the last token is the one that has
  read the whole subject (the paper uses the first token; its nations are mostly one token).
- ``run.demonstrations = template``: a demonstration in the query's own template makes k-shot
  prompts of one template; the paper prepends "The capital of X' is Y'. " to every lead-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UserError


@dataclass(frozen=True)
class Definition:
    setting: str  # "<stage>.<field>" or "run.<field>"
    value: Any
    default: Any  # recallscope's default
    description: str
    source: str  # where the paper's code does it

    def to_dict(self) -> dict:
        return {
            "setting": self.setting,
            "value": self.value,
            "default": self.default,
            "description": self.description,
            "source": self.source,
        }


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    definitions: tuple[Definition, ...] = ()

    def stage_settings(self) -> dict[str, Any]:
        """``{"patch.mode": "path", ...}``: the stage settings (as ``--set`` keys) the preset selects."""
        return {d.setting: d.value for d in self.definitions if not d.setting.startswith("run.")}

    def run_settings(self) -> dict[str, Any]:
        """``{"demonstrations": "plain", "relation": ...}``: how the preset builds prompts."""
        return {d.setting[len("run.") :]: d.value for d in self.definitions if d.setting.startswith("run.")}

    def to_dict(self) -> dict:
        """For the manifest and the summary: the preset's name and every definition it selects."""
        return {"name": self.name, "description": self.description, "definitions": [d.to_dict() for d in self.definitions]}


FACT_UTILS = "easy_transformer/fact_utils.py"
FACT_DATASET = "easy_transformer/fact_dataset.py"

PAPER = Preset(
    name="paper",
    description=(
        "The definitions of the paper's released code (trestad/Factual-Recall-Mechanism) wherever they "
        "differ from recallscope's defaults."
    ),
    definitions=(
        Definition(
            "patch.mode",
            "path",
            "total",
            "path patching: every head's queries, keys and values frozen to the clean run, MLPs free",
            f"{FACT_UTILS}: path_patching (hook_q/hook_k/hook_v of every layer frozen; freeze_mlps=False "
            "as plot_path_patching passes)",
        ),
        Definition(
            "patch.sender_mean",
            "dataset",
            "per_prompt",
            "the sender's value: its mean over the whole corrupted dataset (the nation swapped)",
            f"{FACT_UTILS}: path_patching (torch.mean(sender_cache[hook_name], dim=0)); recallscope reads each "
            "corrupted prompt at its own end position, the authors' code averages absolute positions of "
            "right-padded prompts",
        ),
        Definition(
            "patch.aggregate",
            "ratio_of_means",
            "mean_of_ratios",
            "100 · (mean π_patched − mean π_clean) / mean π_clean over the prompts",
            f"{FACT_UTILS}: plot_path_patching with logit_diff(metric='iw') averaged by handle_all_and_std",
        ),
        Definition(
            "patch.prompts",
            "all",
            "known",
            "every prompt is patched, not only those the model answers correctly",
            f"{FACT_DATASET}: FactDataset (no filtering on the model's answer)",
        ),
        Definition(
            "movers.subject_token",
            "first",
            "last",
            "the movers scatter reads the subject's first token (attention to it, a · W_U[it])",
            f"{FACT_UTILS}: scatter_attention_and_contribution (word_idx['N'], the first token of ' ' + nation)",
        ),
        Definition(
            "run.demonstrations",
            "plain",
            "template",
            "demonstrations in the relation's plain template: \"The capital of X' is Y'. \" before the lead-in",
            f"{FACT_DATASET}: FactDataset.add_a_shot",
        ),
        Definition(
            "run.max_prompts",
            "all",
            32,
            "every prompt of the dataset (recallscope's default run samples 32, seeded), when --max-prompts is not given",
            f"{FACT_DATASET}: FactDataset / gen_prompt_uniform (up to N unique template x nation prompts from 2N "
            "random draws; at its default N = 500, nearly all 225; recallscope takes every one)",
        ),
        Definition(
            "run.relation",
            "paper_country_capital",
            "country_capital_extended",
            "the paper's 15 nations and capitals (lead-ins written by recallscope), when no relation is given",
            f"{FACT_DATASET}: NATIONS, CITIES",
        ),
    ),
)

RECALLSCOPE = Preset(name="recallscope", description="recallscope's defaults (see recallscope.presets for why).")

PRESETS = {p.name: p for p in (RECALLSCOPE, PAPER)}


def get_preset(name: str | None) -> Preset:
    """The preset called ``name`` (None: recallscope's defaults); UserError for an unknown name."""
    if name is None:
        return RECALLSCOPE
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def merge(preset: Preset, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's stage settings under the user's own (``--set`` and flags win)."""
    return {**preset.stage_settings(), **overrides}
