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


def test_unknown_relation_lists_builtins():
    with pytest.raises(UserError) as err:
        load_relation("no_such_relation")
    assert "country_capital_extended" in str(err.value)


def test_relation_files_are_data_only(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"prompt_templates": ["{} is"], "samples": [{"subject": "__import__('os')", "object": "x"}]}))
    rel = load_relation(str(path))
    assert rel.samples[0].subject == "__import__('os')"
