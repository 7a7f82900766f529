import json

import pytest

from recallscope.errors import UserError
from recallscope.tasks import builtin_names, load_relation
from recallscope.tasks.relation import unescape


def test_builtin_relations_include_the_paper_task_and_six_more():
    names = builtin_names()
    assert "country_capital_extended" in names
    assert len(names) >= 7
    rel = load_relation("country_capital_extended")
    assert len(rel.samples) == 15 and len(rel.templates) == 15
    assert all(t.endswith("the capital of {} is") or t.endswith("The capital of {} is") for t in rel.templates)


def test_every_lre_file_loads(lre_dir):
    files = sorted(lre_dir.glob("*.json"))
    assert len(files) == 18
    for path in files:
        rel = load_relation(str(path))
        assert rel.samples and rel.templates
        assert all("\\u" not in s.object for s in rel.samples), path.name


def test_double_escaped_objects_are_decoded(lre_dir):
    rel = load_relation(str(lre_dir / "country_capital_city.json"))
    objects = {s.object for s in rel.samples}
    assert "Brasília" in objects and "Bogotá" in objects
    assert unescape("Bras\\u00edlia") == "Brasília"


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"prompt_templates": ["{} is"], "samples": [', "not valid JSON"),
        ('{"samples": [{"subject": "a", "object": "b"}]}', "missing field 'prompt_templates'"),
        ('{"prompt_templates": ["{} is"], "samples": [{"subject": 3, "object": "b"}]}', "samples[0].subject must be a string"),
        ('{"prompt_templates": ["no slot"], "samples": [{"subject": "a", "object": "b"}]}', "prompt_templates[0] must contain"),
        ('{"prompt_templates": ["{} is"], "samples": []}', "field 'samples' is empty"),
        ('{"prompt_templates": "{} is", "samples": [{"subject": "a", "object": "b"}]}', "must be list"),
        ("[]", "expected a JSON object"),
        ("", "not valid JSON"),
        # issue 25: each was a traceback (UnicodeEncodeError in the tokenizer; IndexError building prompts)
        (
            '{"prompt_templates": ["{} is"], "samples": [{"subject": "Fr\\ud800nce", "object": "Paris"}]}',
            "samples[0].subject holds a lone UTF-16 surrogate (\\ud800 at character 2), which is not text",
        ),
        (
            '{"prompt_templates": ["{} is"], "samples": [{"subject": "France", "object": "Par\\\\udfffis"}]}',
            "samples[0].object holds a lone UTF-16 surrogate (\\udfff at character 3)",
        ),
        (
            '{"prompt_templates": ["\\udc00{} is"], "samples": [{"subject": "a", "object": "b"}]}',
            "prompt_templates[0] holds a lone UTF-16 surrogate",
        ),
        (
            '{"prompt_templates": ["{} is"], "properties": {"demonstration_template": "The capital is"}, '
            '"samples": [{"subject": "a", "object": "b"}]}',
            "properties.demonstration_template must contain exactly one '{}' for the subject (it has 0): 'The capital is'",
        ),
        (
            '{"prompt_templates": ["{} is"], "properties": {"demonstration_template": 3}, "samples": [{"subject": "a", "object": "b"}]}',
            "properties.demonstration_template must be a string, got int",
        ),
        (
            '{"prompt_templates": ["{} is"], "properties": ["x"], "samples": [{"subject": "a", "object": "b"}]}',
            "field 'properties' must be object, got list",
        ),
    ],
)
def test_malformed_relation_files_name_file_and_field(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        load_relation(str(path))
    message = str(err.value)
    assert str(path) in message and fragment in message
    assert "\n" not in message


def test_a_surrogate_pair_is_text(tmp_path):
    path = tmp_path / "emoji.json"
    path.write_text('{"prompt_templates": ["{} is"], "samples": [{"subject": "\\ud83d\\ude00", "object": "smile"}]}')
    assert load_relation(str(path)).samples[0].subject == "\U0001f600"


def test_the_shipped_lre_relations_load_by_name_and_match_the_files(lre_dir):
    from recallscope.tasks.relation import lre_names

    assert len(lre_names()) == 18 and "lre/country_language" in lre_names()
    by_name = load_relation("lre/country_language")
    by_path = load_relation(str(lre_dir / "country_language.json"))
    assert by_name.samples == by_path.samples and by_name.templates == by_path.templates
    assert (lre_dir / "LICENSE").read_text().startswith("MIT License")
    with pytest.raises(UserError, match="unknown relation 'lre/nope'; the shipped LRE relations: lre/city_in_country, "):
        load_relation("lre/nope")


def test_unknown_relation_lists_builtins():
    with pytest.raises(UserError) as err:
        load_relation("no_such_relation")
    assert "country_capital_extended" in str(err.value)


def test_relation_files_are_data_only(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"prompt_templates": ["{} is"], "samples": [{"subject": "__import__('os')", "object": "x"}]}))
    rel = load_relation(str(path))
    assert rel.samples[0].subject == "__import__('os')"
