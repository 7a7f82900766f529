"""Presets: named sets of definitions, so a run can measure what the paper measured.

recallscope's defaults and the paper's released code (trestad/Factual-Recall-Mechanism) differ
in a few definitions. A preset names a set of them; ``recallscope`` is the defaults (no
changes), ``paper`` selects the definition of the authors' code for each setting listed in
:data:`PAPER` — the sender's dataset mean as their ``path_patching`` takes it, their corruption
draw, frozen heads, the ratio of means, every prompt, the first subject token, their one-shot
format, their nations and capitals. Each :class:`Definition` says which setting it changes, the
value, recallscope's default, and the function of the authors' code it follows, so a manifest
can list exactly what ran; :attr:`Preset.not_reproduced` lists what the preset cannot make equal
to the authors' runs (their random draws, their lead-in templates, the rows their figure omits).

With the same weights, prompts and corrupted prompts, the paper preset's path-patching effects
equal the authors' loop to float rounding (``tests/test_paper_preset_reference.py``: a tiny
GPT-2 with the real GPT-2 BPE, ``paper_country_capital`` at 0 and 1 shots, six prompt lengths).

Settings are ``"<stage>.<field>"`` (a stage config field, the same keys as ``--set``) or
``"run.<field>"`` (how prompts are built: ``run.demonstrations``, ``run.relation``, ``run.max_prompts``);
:meth:`Preset.stage_settings` and :meth:`Preset.run_settings` split them. A user's own
``--set`` or flag wins over the preset's value; ``run.relation`` and ``run.max_prompts`` apply
only when no relation (no ``--max-prompts``) is given — so ``--preset paper --relation FILE``
runs the paper's definitions on a relation file of one's own (the authors' lead-ins, say).

Why recallscope's defaults are what they are (the README's short version is in docs/patch.md):

- ``patch.mode = total``: the total effect asks what the recall *depends on*, with every later
  component free to react; path patching (heads frozen) measures one route only — direct and
  through the end-position MLPs — and is the paper's specific question.
- ``patch.sender_mean = per_prompt``: same-length corruptions of the prompt itself keep every
  position aligned, so the patched value is what *this* prompt would have had with another
  subject; a dataset mean mixes templates and shot contexts. Of the two dataset means,
  recallscope's own-end one (``dataset``) reads every corrupted prompt at its own end; the
  authors' (``dataset_by_position``) averages absolute positions of right-padded texts, which
  mixes one prompt's end with other prompts' subjects, answers and padding when lengths differ.
- ``patch.corruption_draw = other_subject``: a corruption that draws the clean subject (or a
  demonstration's) again corrupts nothing; the authors' draw allows both.
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
    not_reproduced: tuple[str, ...] = ()  # what the preset cannot make equal to the source's runs, and why

    def stage_settings(self) -> dict[str, Any]:
        """``{"patch.mode": "path", ...}``: the stage settings (as ``--set`` keys) the preset selects."""
        return {d.setting: d.value for d in self.definitions if not d.setting.startswith("run.")}

    def run_settings(self) -> dict[str, Any]:
        """``{"demonstrations": "plain", "relation": ...}``: how the preset builds prompts."""
        return {d.setting[len("run.") :]: d.value for d in self.definitions if d.setting.startswith("run.")}

    def to_dict(self) -> dict:
        """For the manifest and the summary: the preset's name, every definition it selects and what it cannot reproduce."""
        return {
            "name": self.name,
            "description": self.description,
            "definitions": [d.to_dict() for d in self.definitions],
            "not_reproduced": list(self.not_reproduced),
        }


FACT_UTILS = "easy_transformer/fact_utils.py"
FACT_DATASET = "easy_transformer/fact_dataset.py"

PAPER = Preset(
    name="paper",
    description=(
        "The definitions of the paper's released code (trestad/Factual-Recall-Mechanism) for the settings listed "
        "below, where recallscope's defaults differ; what it cannot reproduce is listed under not_reproduced."
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
            "dataset_by_position",
            "per_prompt",
            "the sender's value: its mean over the corrupted dataset as the authors' code takes it — the corrupted texts "
            "with the answer appended, right-padded with the end-of-text token and run without an attention mask, "
            "averaged over prompts at each absolute position, read at each clean prompt's end index (its own last "
            "token; the authors' index, length − 2, is that token when the answer is one token)",
            f"{FACT_UTILS}: path_patching (torch.mean(sender_cache[hook_name], dim=0) over model(D_new.toks), patched at "
            f"D_new.word_idx['end'] = the clean dataset's); {FACT_DATASET}: FactDataset (tokenizer(texts, padding=True), "
            "get_end_idxs)",
        ),
        Definition(
            "patch.corruption_draw",
            "any_subject",
            "other_subject",
            "each corrupted prompt swaps the subject for one drawn uniformly from every subject of the relation: the "
            "clean subject itself and a demonstration's are allowed",
            f"{FACT_DATASET}: gen_flipped_prompts with flip ('N', 'RAND') (nations[np.random.randint(len(nations))])",
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
    not_reproduced=(
        "the authors' random draws themselves: which template x nation prompts gen_prompt_uniform keeps (2N draws with "
        "replacement, the unique ones kept: at N = 500 each prompt is missed with probability (224/225)^1000, about 2.7 of the 225 on average; recallscope takes all 225), the nation "
        "gen_flipped_prompts swaps in and add_a_shot's demonstration are drawn by recallscope from --seed, from the same "
        "choices but not their NumPy / random global state",
        f"the authors' lead-in templates ({FACT_DATASET}: NC_TEMPLATES), which recallscope does not ship: "
        "paper_country_capital's 15 lead-ins are recallscope's own; write theirs as prompt_templates_zs of an LRE-format "
        'JSON file (subject slot {}, the answer not in the template; properties.demonstration_template "The capital '
        'of {} is" for their one-shot format) and pass it with --relation',
        "the rows of the authors' figure: plot_path_patching with layout='max' and the receiver in the last layer "
        "patches senders of layers 0..L-2 only; recallscope patches every layer (each sender's effect is computed "
        "alone, so the shared rows are the same)",
        "the authors' model code: recallscope runs its own forward pass (equal to transformers' logits, tested), not "
        "their EasyTransformer fork, so float32 effects agree to rounding, not bit for bit",
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
