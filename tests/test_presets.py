"""Presets and the paper's definitions they select: every definition's default is recallscope's
real default, the paper preset's settings are valid stage settings, the paper's task has the
paper's 15 nations and capitals in the paper's form, the paper's demonstration format, the movers
scatter on the subject's first token, and bad input (unknown preset, mode, no prompt) is one line."""

from __future__ import annotations

import dataclasses
import json
import re
import types

import numpy as np
import pytest

from recallscope import patch as P
from recallscope import presets
from recallscope.errors import UserError
from recallscope.movers import MoversConfig, check_config, find_movers
from recallscope.pipeline import make_configs
from recallscope.tasks import build_prompts, load_relation
from recallscope.tasks.prompts import PromptSet, swapped_subject_prompts
from test_cli import assert_one_line_error, cli  # noqa: E402  (tests/ is on sys.path)
from test_movers import PAD, all_heads, hand_built_model, token_prompts, L, H  # noqa: E402

NATIONS = [
    "China",
    "USA",
    "Russia",
    "England",
    "France",
    "Japan",
    "Italy",
    "Canada",
    "Australia",
    "Spain",
    "Egypt",
    "Portugal",
    "Austria",
    "Greece",
    "Thailand",
]
CAPITALS = [
    "Beijing",
    "Washington",
    "Moscow",
    "London",
    "Paris",
    "Tokyo",
    "Rome",
    "Ottawa",
    "Canberra",
    "Madrid",
    "Cairo",
    "Lisbon",
    "Vienna",
    "Athens",
    "Bangkok",
]


def test_every_definition_names_recallscopes_real_default():
    configs = make_configs({})
    for d in presets.PAPER.definitions:
        scope, field = d.setting.split(".")
        if scope == "run":
            continue
        assert getattr(configs[scope], field) == d.default, d.setting
        assert d.value != d.default and d.source and d.description
    import inspect

    assert inspect.signature(build_prompts).parameters["demonstrations"].default == "template"
    assert presets.get_preset(None) is presets.RECALLSCOPE and presets.RECALLSCOPE.stage_settings() == {}


def test_paper_preset_selects_the_papers_definitions_and_user_settings_win():
    configs = make_configs(presets.PAPER.stage_settings())
    patch = configs["patch"]
    assert (patch.mode, patch.sender_mean, patch.corruption_draw, patch.aggregate, patch.prompts) == (
        "path",
        "dataset_by_position",
        "any_subject",
        "ratio_of_means",
        "all",
    )
    assert configs["movers"].subject_token == "first"
    assert presets.PAPER.run_settings() == {"demonstrations": "plain", "max_prompts": "all", "relation": "paper_country_capital"}
    merged = presets.merge(presets.PAPER, {"patch.prompts": "known"})
    assert merged["patch.prompts"] == "known" and merged["patch.mode"] == "path"
    listed = presets.PAPER.to_dict()
    assert listed["name"] == "paper" and len(listed["definitions"]) == 9
    # what the preset cannot reproduce is in the manifest: the authors' draws, their templates, their figure's rows
    assert len(listed["not_reproduced"]) == 4
    for words in ("random draws", "NC_TEMPLATES", "--relation", "layout='max'"):
        assert any(words in line for line in listed["not_reproduced"]), words
    assert presets.RECALLSCOPE.to_dict()["not_reproduced"] == []
    json.dumps(listed)  # the manifest can hold it


def test_unknown_preset_and_bad_patch_choices_are_user_errors():
    with pytest.raises(UserError, match="unknown preset 'nope'; available: paper, recallscope"):
        presets.get_preset("nope")
    model = types.SimpleNamespace(cfg=types.SimpleNamespace(n_layers=2, n_heads=2))
    for field, value in (("mode", "both"), ("direction", "up"), ("sender_mean", "x"), ("prompts", "some"), ("aggregate", "max")):
        with pytest.raises(UserError, match=f"patch.{field} must be one of"):
            P.check_config(dataclasses.replace(P.PatchConfig(), **{field: value}), model)
    for mean in ("dataset", "dataset_by_position"):
        with pytest.raises(UserError, match="takes patch.sender_mean=per_prompt"):
            P.check_config(P.PatchConfig(direction="denoise", sender_mean=mean), model)
    with pytest.raises(UserError, match="patch.corruption_draw must be one of other_subject, any_subject"):
        P.check_config(P.PatchConfig(corruption_draw="nearby"), model)
    with pytest.raises(UserError, match="corruption_draw=any_subject draws one swapped subject per prompt for a dataset mean"):
        P.check_config(P.PatchConfig(corruption_draw="any_subject"), model)
    with pytest.raises(UserError, match="path mode has the engines exact and naive"):
        P.check_config(P.PatchConfig(mode="path", engine="attribution"), model)


def test_prompts_all_with_no_valid_prompt_is_a_user_error():
    rel = load_relation("paper_country_capital")
    empty = PromptSet(rel, 0, 0, (), {"answer_first_token_shared": 15})
    ctx = types.SimpleNamespace(prompts=empty)
    with pytest.raises(UserError, match="no prompt of 'paper_country_capital' has a valid answer token"):
        P.stage_prompts(ctx, P.PatchConfig(prompts="all"))


def test_paper_task_has_the_papers_nations_in_the_papers_form(smollm2):
    rel = load_relation("paper_country_capital")
    assert [s.subject for s in rel.samples] == NATIONS and [s.object for s in rel.samples] == CAPITALS
    assert len(rel.templates) == len(set(rel.templates)) == 15
    assert all(re.fullmatch(r"[^{}]+, the capital of \{\} is", t) for t in rel.templates)
    ps = build_prompts(rel, smollm2.tokenizer, shots=0)
    assert len(ps) == 225 and sum(ps.dropped.values()) == 0
    extended = load_relation("country_capital_extended")
    assert {s.subject for s in extended.samples} != set(NATIONS)
    assert "paper" not in extended.name


def test_plain_demonstrations_are_the_papers_one_shot_format(smollm2):
    rel = load_relation("paper_country_capital")
    ps = build_prompts(rel, smollm2.tokenizer, shots=1, seed=0, demonstrations="plain")
    p = ps.prompts[0]
    demo = p.demos[0]
    assert p.text == f"The capital of {demo.subject} is {demo.object}. " + p.template.format(p.subject)
    own = build_prompts(rel, smollm2.tokenizer, shots=1, seed=0)
    assert own.prompts[0].text == p.template.format(demo.subject) + f" {demo.object}. " + p.template.format(p.subject)
    # corruptions keep the demonstration format
    swapped = swapped_subject_prompts(ps, smollm2.tokenizer)
    assert len(swapped) == len(ps)
    assert all(
        s.text.startswith(f"The capital of {q.demos[0].subject} is") and s.subject != q.subject
        for s, q in zip(swapped, ps.prompts, strict=True)
    )


def test_movers_first_subject_token():
    view, prompts = hand_built_model(), token_prompts()
    last = find_movers(view, prompts, all_heads(L, H), MoversConfig(), pad_id=PAD, progress=False)
    first = find_movers(view, prompts, all_heads(L, H), MoversConfig(subject_token="first"), pad_id=PAD, progress=False)
    f, l = first.frame, last.frame
    starts = np.array([p.input_ids[p.subject_span[0]] for p in prompts])
    assert (f.groupby("prompt_index")["x_id"].first().to_numpy() == starts).all()
    two = np.array([p.subject_n_tokens == 2 for p in prompts])
    assert two.any() and (~two).any()
    lx = l.groupby("prompt_index")["x_id"].first().to_numpy()
    assert (lx[two] != starts[two]).all() and (lx[~two] == starts[~two]).all()
    # one-token subjects: the projection is the same; the scatter reads attention to the first token
    assert np.allclose(
        f.loc[f.prompt_index.isin(np.where(~two)[0]), "projection"], l.loc[l.prompt_index.isin(np.where(~two)[0]), "projection"]
    )
    head = next(h for h in first.heads if (h["layer"], h["head"]) == (1, 3))
    rows = f[f.component == "L1H3"]
    assert head["attention_to_subject"] == pytest.approx(rows["attention_to_first_subject"].mean())
    assert "first token" in first.to_dict()["subject_token"]
    with pytest.raises(UserError, match="movers.subject_token"):
        check_config(MoversConfig(subject_token="middle"), L, H)


@pytest.mark.slow
def test_cli_bad_mode_is_one_line():
    assert_one_line_error(
        cli("patch", "--mode", "sideways", "--max-prompts", "4"),
        "--mode sideways is not allowed: --mode must be one of total, path",
    )


def test_cli_unknown_preset_is_one_line_before_the_model_loads():
    for verb in (("run", "--out", "unused-out"), ("patch",)):
        assert_one_line_error(cli(*verb, "--preset", "nope"), "unknown preset 'nope'; available: paper, recallscope")


def test_apply_preset_fills_run_settings_and_user_settings_win():
    from recallscope.pipeline import RunConfig, apply_preset, preset_record

    run, overrides = apply_preset(RunConfig(preset="paper"), {"patch.prompts": "known"})
    assert run.demonstrations == "plain" and overrides["patch.mode"] == "path" and overrides["patch.prompts"] == "known"
    assert preset_record(run)["name"] == "paper"
    plain, none = apply_preset(RunConfig(), None)
    assert plain == RunConfig() and none == {}
    with pytest.raises(UserError, match="unknown preset"):
        apply_preset(RunConfig(preset="nope"), {})


def test_the_default_run_samples_32_prompts_and_the_paper_preset_runs_every_prompt():
    from recallscope.pipeline import DEFAULT_MAX_PROMPTS, resolve_max_prompts

    run_defaults = {d.setting: d.default for d in presets.PAPER.definitions if d.setting.startswith("run.")}
    assert run_defaults["run.max_prompts"] == DEFAULT_MAX_PROMPTS == 32  # the definition names the real default
    assert resolve_max_prompts("default") == resolve_max_prompts("default", "recallscope") == 32
    assert resolve_max_prompts("default", "paper") is None  # the paper's whole dataset
    assert resolve_max_prompts("all", "recallscope") is None and resolve_max_prompts(None) is None
    assert resolve_max_prompts("7", "paper") == resolve_max_prompts(7) == 7  # the user's number wins over the preset's
    for bad in ("0", "lots", 0, -3, "2.5", True):
        with pytest.raises(UserError, match="--max-prompts must be a number >= 1 or all"):
            resolve_max_prompts(bad)
    # The CLI: 100 by default (recall's summary counts the sampled prompts), every prompt on request.
    runs = {
        "default": cli("recall", "--model", "planted", "--relation", "paper_country_capital", "--json"),
        "all": cli("recall", "--model", "planted", "--relation", "paper_country_capital", "--max-prompts", "all", "--json"),
        "paper": cli("recall", "--model", "planted", "--preset", "paper", "--json"),
    }
    n = {name: json.loads(proc.stdout)["n_prompts"] for name, proc in runs.items() if proc.returncode == 0}
    assert n == {"default": 32, "all": 225, "paper": 225}, {k: p.stderr[-300:] for k, p in runs.items()}
    assert_one_line_error(cli("recall", "--max-prompts", "lots"), "--max-prompts must be a number >= 1 or all, got 'lots'")


def test_the_paper_preset_runs_on_a_relation_file_of_ones_own_templates(tmp_path):
    """The preset's relation applies only when none is given: ``--preset paper --relation FILE`` runs the
    paper's definitions on the user's lead-ins (the authors' own, say), with the paper's one-shot format
    when the file names it; the manifest records the file's relation and what the preset cannot reproduce."""
    nations = dict(zip(NATIONS, CAPITALS, strict=True))
    own = {
        "name": "my_capitals",
        "prompt_templates": ["Some lead-in, the capital of {} is"],
        "prompt_templates_zs": ["Some lead-in, the capital of {} is", "Another lead-in: the capital of {} is"],
        "properties": {"demonstration_template": "The capital of {} is"},
        "samples": [{"subject": n, "object": c} for n, c in nations.items()],
    }
    path = tmp_path / "my_capitals.json"
    path.write_text(json.dumps(own))
    out = tmp_path / "run"
    proc = cli(
        "recall", "--model", "planted", "--preset", "paper", "--relation", str(path), "--shots", "1", "--out", str(out), "--json"
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    summary = json.loads(proc.stdout)
    assert summary["relation"] == "my_capitals" and summary["n_prompts"] == 15  # every prompt of the file (1 template)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["relation"]["source"] == str(path) and manifest["run"]["demonstrations"] == "plain"
    assert manifest["preset"]["not_reproduced"] == list(presets.PAPER.not_reproduced)
