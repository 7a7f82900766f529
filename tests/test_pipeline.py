import json

import pytest

from recallscope.claims import NOT_MEASURABLE
from recallscope.pipeline import RunConfig, execute
from recallscope.rundir import dumps

pytestmark = pytest.mark.slow


def test_force_on_one_stage_keeps_the_others_and_claims_read_them(smollm2, tmp_path):
    run = RunConfig(max_prompts=10)
    out = str(tmp_path / "run")
    _, first = execute(run, ["suppress"], out=out, model=smollm2, progress=False)
    assert set(first["stages"]) == {"recall", "suppress"}
    _, again = execute(run, ["claims"], out=out, model=smollm2, progress=False, force=True)
    as_saved = json.loads(dumps(first["stages"]["suppress"]))
    assert again["stages"]["suppress"] == as_saved  # kept, not redone
    verdicts = {c["claim"]: c["verdict"] for c in again["claims"]}
    assert verdicts["The final layer suppresses the correct answer"] != NOT_MEASURABLE
    assert verdicts["Mover heads move the topic (subject) to the last position"] == NOT_MEASURABLE
