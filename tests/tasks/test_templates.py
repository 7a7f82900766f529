"""Issue 16, class D: relation templates are parsed once, with str.format's grammar.

``"Capital of {{}} is"`` has no subject slot (its braces are literal): refused, where it used to
give "Capital of {} is" for every prompt. ``"{{note}} The capital of {} is"`` formats to
"{note} The capital of France is" and its subject span is taken from that text, where it used
to be shifted by the two escaped braces (the subject's last token became " is").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recallscope.errors import UserError
from recallscope.tasks import build_prompts, load_relation
from recallscope.tasks.relation import Relation, Sample, Template, parse_relation

SAMPLES = [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin")]


def relation_data(*templates: str) -> dict:
    return {"prompt_templates": list(templates), "samples": [{"subject": s, "object": o} for s, o in SAMPLES]}


@pytest.mark.parametrize(
    "template, fragment",
    [
        ("Capital of {{}} is", "must contain exactly one '{}' for the subject (it has 0)"),
        ("The {} of {} is", "(it has 2)"),
        ("{note} The capital of {} is", "has the field '{note}'"),
        ("The capital of {0} is", "has the field '{0}'"),
        ("The capital of {:>9} is", "has the field '{:>9}'"),
        ("The capital of {} is }", "has a lone brace"),
    ],
)
def test_fault_D_templates_without_exactly_one_slot_are_refused(template, fragment):
    with pytest.raises(UserError) as info:
        parse_relation(relation_data(template), "r.json", "r.json", "r")
    assert fragment in str(info.value) and "r.json: prompt_templates[0]" in str(info.value)


def test_fault_D_literal_braces_follow_str_format():
    for text in ("{{note}} The capital of {} is", "{{{}}} is", "The capital of {} is {{x}}", "{} }} {{"):
        parsed = Template.parse(text)
        assert parsed.format("France") == text.format("France")
        assert parsed.format("France")[len(parsed.prefix):].startswith("France")


def test_fault_D_template_with_only_escaped_braces_fails_on_the_command_line(tmp_path):
    path = tmp_path / "braces.json"
    path.write_text(json.dumps(relation_data("Capital of {{}} is")))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "recallscope", "recall", "--relation", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "must contain exactly one '{}' for the subject (it has 0)" in lines[0], proc.stderr


@pytest.mark.slow
def test_fault_D_escaped_braces_keep_the_subject_span(smollm2):
    tok = smollm2.tokenizer
    rel = parse_relation(relation_data("{{note}} The capital of {} is"), "r.json", "r.json", "r")
    for shots in (0, 1):
        ps = build_prompts(rel, tok, shots=shots)
        assert len(ps) == 4
        for p in ps.prompts:
            assert p.text.endswith(f"{{note}} The capital of {p.subject} is")
            lo, hi = p.subject_span
            assert tok.decode(list(p.input_ids[lo:hi])).strip() == p.subject
            assert tok.decode([p.subject_id]).strip() == p.subject  # X is the subject, not " is"
            assert tok.decode([p.input_ids[-1]]) == " is"


# Literal text for the property test: words, spaces and every brace form str.format allows.
CHUNK = st.lists(st.sampled_from(["The", "capital", "of", "{{", "}}", "{{note}}", "{{}}", "[x]", "Q:", "—", "é", "\n"]),
                 max_size=5).map(" ".join)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=CHUNK, after=CHUNK, shots=st.integers(0, 2))
def test_fault_D_decoded_subject_span_is_the_subject_for_any_accepted_template(smollm2, before, after, shots):
    """For any template the loader accepts (one slot, braces escaped), with the slot set off by
    spaces, the tokens of the subject span decode to exactly the subject."""
    tok = smollm2.tokenizer
    template = " ".join(part for part in (before, "{}", after) if part)
    rel = parse_relation(relation_data(template), "r.json", "r.json", "r")  # accepted
    ps = build_prompts(rel, tok, shots=shots, seed=0)
    assert len(ps) + sum(ps.dropped.values()) >= len(SAMPLES)
    for p in ps.prompts:
        lo, hi = p.subject_span
        assert tok.decode(list(p.input_ids[lo:hi])).strip() == p.subject, (template, p.text)
        assert p.text.endswith(Template.parse(rel.templates[0]).format(p.subject))


def test_a_relation_built_in_python_is_checked_too():
    rel = Relation("r", ("Capital of {{}} is",), (), tuple(Sample(s, o) for s, o in SAMPLES), "test")
    with pytest.raises(UserError, match="it has 0"):
        build_prompts(rel, tokenizer=None)


def test_builtin_templates_all_parse():
    from recallscope.tasks import builtin_names

    for name in builtin_names():
        for template in load_relation(name).templates:
            assert Template.parse(template).format("X") == template.format("X")
