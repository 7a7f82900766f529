"""The Python API a notebook user reaches for: ``import recallscope as rs`` then ``rs.patch``, ``rs.run``
returning a Study or a Sweep, ``rs.open`` reading one back without torch, short reprs and HTML views,
per-head grids. On the ``planted`` control (a 3-layer Llama on SmolLM2's tokenizer, built in seconds):
its numbers are not the question here, the API's identities are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import recallscope as rs
from recallscope import verdicts
from recallscope.display import MAX_LINES, VERDICT_COLOURS, grid_of_heads, verdict_colours
from recallscope.rundir import dumps
from recallscope.study import _id_order

RELATION = "paper_country_capital"
STAGES = ["patch", "movers", "decompose", "intercept", "suppress", "claims"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def fresh_python(code: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    sweep = rs.run(
        model="planted", relation=[RELATION], shots=[0, 1], stages=STAGES, out=str(out), max_prompts=12, progress=False
    )
    return sweep, out


def test_stage_modules_are_attributes_of_the_package_without_importing_them_and_without_torch():
    code = """
import sys
import recallscope as rs
assert "torch" not in sys.modules, "import recallscope imported torch"
assert "patch" in dir(rs) and "movers" in dir(rs) and "open" in dir(rs)
names = {name: getattr(rs, name).__name__ for name in ("recall", "patch", "movers", "decompose", "intercept", "suppress", "claims", "causal_trace", "knockout")}
print(names["patch"], names["movers"], rs.patch.PatchConfig.__name__, rs.movers.MoversConfig().heads, callable(rs.run))
"""
    proc = fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["recallscope.patch", "recallscope.movers", "PatchConfig", "top", "True"]


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'pacth'"):
        rs.pacth  # noqa: B018


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"shots": "3"}, "shots: give a number"),
        ({"shots": [0, -1]}, "shots: give a number"),
        ({"shots": [0, True]}, "shots: give a number"),
        ({"relation": [RELATION, 3]}, "relation: give a name or path"),
        ({"model": "planted", "tokenizer": object()}, "tokenizer= goes with a model already in memory"),
    ],
)
def test_bad_sweep_arguments_are_one_line_user_errors(kwargs, needle):
    with pytest.raises(rs.UserError, match=needle):
        rs.run(**{"model": "planted", "relation": RELATION, "stages": ["recall"], "progress": False, **kwargs})


def test_run_with_lists_is_a_sweep_with_cells_claims_and_the_shot_claims(sweep_dir):
    sweep, out = sweep_dir
    assert isinstance(sweep, rs.Sweep) and sorted(sweep.cells) == [(RELATION, 0), (RELATION, 1)]
    cell = sweep[RELATION, 1]
    assert isinstance(cell, rs.Study) and cell.summary["shots"] == 1 and cell.path == str(out / RELATION / "1shot")
    claims = sweep.claims()
    assert list(claims.columns[:3]) == ["relation", "shots", "claim"]
    assert len(claims) == sum(len(sweep[key].claims()) for key in sweep.cells)
    shot = sweep.shot_claims()
    assert len(shot) >= 1 and set(shot["relation"]) == {RELATION} and set(shot["verdict"]) <= set(VERDICT_COLOURS)
    grid = sweep.grid()
    assert list(grid.columns) == [(RELATION, 0), (RELATION, 1)]
    # one row per claim id (whatever rows the claims stage writes), in C1 < C2 < … order; a cell's own
    # claims fill its column; a claim across shot counts is its relation's, in each of its cells
    cell_ids = {verdicts.claim_id(r, i) for key in sweep.cells for i, r in enumerate(sweep[key].claims().to_dict("records"))}
    shot_ids = [verdicts.claim_id(r, i) for i, r in enumerate(shot.to_dict("records"))]
    ids = list(grid.index.get_level_values("id"))
    assert sorted(ids) == sorted(cell_ids | set(shot_ids)) and ids == sorted(ids, key=_id_order)
    first = sweep[RELATION, 0].claims()
    assert grid.loc[(verdicts.claim_id(first.loc[0], 0), first.loc[0, "claim"]), (RELATION, 0)] == first.loc[0, "verdict"]
    for claim_id, row in zip(shot_ids, shot.to_dict("records"), strict=True):
        assert (grid.loc[(claim_id, row["claim"])] == row["verdict"]).all()
    # the CLI's summary.json is this sweep's summary
    on_disk = json.loads((out / "summary.json").read_text())
    assert [r["path"] for r in on_disk["runs"]] == [r["path"] for r in sweep.summary["runs"]]


def test_open_reproduces_the_sweep_in_a_fresh_interpreter_without_torch(sweep_dir, tmp_path):
    sweep, out = sweep_dir
    sweep.claims().to_pickle(tmp_path / "claims.pkl")
    sweep[RELATION, 0]["patch"].to_frame().to_parquet(tmp_path / "patch.parquet")
    code = f"""
import sys
import pandas as pd
import recallscope as rs
opened = rs.open({str(out)!r})
claims = opened.claims()
pd.testing.assert_frame_equal(claims, pd.read_pickle({str(tmp_path / "claims.pkl")!r}))
pd.testing.assert_frame_equal(opened[{RELATION!r}, 0]["patch"].to_frame(), pd.read_parquet({str(tmp_path / "patch.parquet")!r}))
fig = opened[{RELATION!r}, 0]["patch"].plot()
grid = opened[{RELATION!r}, 0]["patch"].to_array()
html = opened._repr_html_()
print(type(opened).__name__, len(claims), type(fig).__name__, grid.shape, "torch" in sys.modules, "transformers" in sys.modules)
"""
    proc = fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    n_claims = len(sweep.claims())
    # no torch was imported, so no model can have been loaded
    assert proc.stdout.split() == ["Sweep", str(n_claims), "Figure", "(3,", "4)", "False", "False"]


def test_open_equals_the_in_memory_study_table_for_table(sweep_dir):
    sweep, out = sweep_dir
    opened = rs.open(out)
    assert isinstance(opened, rs.Sweep)
    pd.testing.assert_frame_equal(opened.claims(), sweep.claims())
    pd.testing.assert_frame_equal(opened.shot_claims(), sweep.shot_claims())
    pd.testing.assert_frame_equal(opened.grid(), sweep.grid())
    for key in sweep.cells:
        mine, theirs = sweep[key], opened[key]
        assert theirs.model is None and theirs.prompts is None
        for stage in STAGES:
            names = list(mine[stage].tables())
            assert list(theirs[stage].tables())[0] == names[0] == stage and set(theirs[stage].tables()) == set(names)
            for name, frame in mine[stage].tables().items():
                pd.testing.assert_frame_equal(theirs[stage].tables()[name], frame, check_dtype=False)
            stored = {k: v for k, v in theirs[stage].to_dict().items() if k not in ("wall_seconds", "cpu_seconds")}
            assert stored == json.loads(dumps(mine[stage].to_dict()))  # the summary entry, as summary.json holds it
    single = rs.open(out / RELATION / "0shot")
    assert isinstance(single, rs.Study) and single.stages == sweep[RELATION, 0].stages
    pd.testing.assert_frame_equal(single.claims(), sweep[RELATION, 0].claims())


def test_open_refuses_a_directory_without_a_finished_run(tmp_path):
    with pytest.raises(rs.UserError, match="no summary.json"):
        rs.open(tmp_path)


def test_reprs_are_short_and_html_views_show_verdict_colours(sweep_dir):
    sweep, _ = sweep_dir
    study = sweep[RELATION, 0]
    objects = [repr(study.model), repr(study.prompts), repr(study.known), repr(study.prompts.relation)]
    assert all(len(text.splitlines()) == 1 and len(text) <= 130 for text in objects), objects
    assert repr(study.known).startswith(f"PromptSet('{RELATION}', 0-shot, {study.summary['n_known']} prompts")
    for text in [repr(sweep), repr(study), *(repr(study[s]) for s in ["recall", *STAGES])]:
        assert len(text.splitlines()) <= MAX_LINES and max(map(len, text.splitlines())) <= 130, text
    assert repr(study).startswith("Study · planted · paper_country_capital · 0-shot")
    top = study.summary["stages"]["patch"]["top_components"][0]
    assert f"{top['component']} {top['effect']:.3g}" in repr(study["patch"])  # the top component with its effect
    html = study._repr_html_()
    claims = study.claims()
    for verdict in claims["verdict"]:
        background, _ = verdict_colours(verdict)
        assert background in html  # each verdict's badge colour
    assert top["component"] in html
    assert "<table" in sweep._repr_html_() and verdict_colours(sweep.shot_claims().loc[0, "verdict"])[0] in sweep._repr_html_()
    assert study["patch"]._repr_html_().count("<tr>") >= 3


def test_verdict_colours_cover_the_four_verdicts():
    verdicts = ["holds", "does not hold", "inconclusive", "not measurable here"]
    assert sorted(VERDICT_COLOURS) == sorted(verdicts)
    assert len({verdict_colours(v) for v in verdicts}) == 4
    assert verdict_colours("not measurable here (no known prompt)") == VERDICT_COLOURS["not measurable here"]


def test_a_per_head_result_is_a_layer_by_head_grid(sweep_dir):
    sweep, _ = sweep_dir
    patch = sweep[RELATION, 0]["patch"]
    grid = patch.head_grid()
    components = patch.tables()["components"]
    heads = components[components["kind"] == "head"]
    assert grid.shape == (patch.n_layers, patch.n_heads) == (3, 4)
    for r in heads.itertuples():
        assert grid.loc[r.layer, r.head] == r.effect
    assert np.array_equal(patch.to_array(), grid.to_numpy(), equal_nan=True)
    movers = sweep[RELATION, 0]["movers"]
    frame = movers.to_frame()
    mean = frame.groupby(["layer", "head"])["attention_to_subject"].mean()
    assert movers.to_array()[tuple(mean.index[0])] == pytest.approx(mean.iloc[0])
    with pytest.raises(ValueError, match="no per-head table"):
        sweep[RELATION, 0]["recall"].to_array()
    with pytest.raises(ValueError, match="no column 'nope'"):
        patch.to_array("nope")


def test_grid_of_heads_leaves_unmeasured_heads_empty():
    frame = pd.DataFrame(
        {
            "kind": ["head", "head", "mlp"],
            "layer": [0, 1, 1],
            "head": pd.array([1, 0, None], dtype="Int64"),
            "v": [2.0, -1.0, 9.0],
        }
    )
    grid = grid_of_heads(frame, "v", n_layers=2, n_heads=2)
    assert grid.to_numpy().tolist()[0][1] == 2.0 and grid.loc[1, 0] == -1.0 and np.isnan(grid.loc[0, 0])


def test_progress_false_writes_nothing_on_stderr(capfd, monkeypatch):
    monkeypatch.setenv("RECALLSCOPE_PROGRESS", "1")  # bars forced on wherever asked for ...
    rs.run(model="planted", relation=RELATION, stages=["patch"], max_prompts=6, progress=False)
    assert capfd.readouterr().err == ""  # ... and progress=False still writes nothing


# ----------------------------------------------------------------------------- every stage of the stage table
SCREEN_ROWS = 40  # an HTML view's table rows: at most a screen


def _shows_itself_in_a_screen(obj) -> tuple[str, str]:
    text, html = repr(obj), obj._repr_html_()
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES and max(map(len, lines)) <= 130, text
    assert html.count("<tr") <= SCREEN_ROWS and len(html) <= 20_000, (type(obj).__name__, len(html))
    return text, html


def test_every_stage_result_has_a_short_repr_and_an_html_view_in_memory_and_read_back(every_stage_study):
    """Generic over the stage table: a stage added to pipeline.STAGES is checked here without being named."""
    from recallscope import pipeline
    from recallscope.display import ResultView

    study = every_stage_study
    opened = rs.open(study.path)
    for stage in pipeline.STAGES:
        mine, stored = study[stage], opened[stage]
        assert isinstance(mine, ResultView) and mine.stage == stage, stage
        text, html = _shows_itself_in_a_screen(mine)
        stored_text, stored_html = _shows_itself_in_a_screen(stored)
        # the headline is the summary's, so the result read back shows the same lines under its own title
        assert text.splitlines()[1:] == stored_text.splitlines()[1:], stage
        assert "<table" in html and html.count("<tr>") == stored_html.count("<tr>"), stage
    for whole in (study, opened):
        text, html = _shows_itself_in_a_screen(whole)
        assert text.startswith("Study · planted · paper_country_capital · 0-shot")
        for verdict in whole.claims()["verdict"]:
            assert verdict_colours(verdict)[0] in html
        assert whole.top_components(1).loc[0, "component"] in html


def test_every_per_head_table_gives_a_layer_by_head_grid(every_stage_study):
    """Every stage with a per-head table (a ``head`` column with values) has head_grid()/to_array(): the
    model's [n_layers, n_heads], each cell the mean of the table's rows for that head; read back alike."""
    from recallscope import pipeline
    from recallscope.display import HEAD_TABLES

    study = every_stage_study
    opened = rs.open(study.path)
    shape = (study.model.view.cfg.n_layers, study.model.view.cfg.n_heads)
    per_head = {
        stage
        for stage in pipeline.STAGES
        for frame in study[stage].tables().values()
        if {"layer", "head"} <= set(frame.columns) and frame["head"].notna().any()
    }
    assert per_head <= set(HEAD_TABLES), f"per-head tables without a grid: {sorted(per_head - set(HEAD_TABLES))}"
    for stage, (table, value) in HEAD_TABLES.items():
        if stage not in study:
            continue
        result = study[stage]
        frame = result.tables()[table] if table is not None else result.to_frame()
        rows = frame[frame["head"].notna() & (frame["kind"] == "head" if "kind" in frame else True)]
        means = rows.groupby([rows["layer"].astype(int), rows["head"].astype(int)])[value].mean()
        grid = result.to_array()
        assert grid.shape == shape, stage
        assert len(means) and all(grid[layer, head] == pytest.approx(v) for (layer, head), v in means.items()), stage
        assert np.isnan(grid).sum() == grid.size - len(means), stage  # unmeasured heads empty, never 0
        assert np.array_equal(opened[stage].to_array(), grid, equal_nan=True), stage
