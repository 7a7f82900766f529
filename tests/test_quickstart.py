"""examples/quickstart.ipynb executed as CI executes it (nbclient, a fresh Python kernel) on the real
embedded model, and its key outputs asserted: the study's claims with verdict colours and progress
bars in the cell, the layer × head grid, L23H4's attention, the claims table, the 0 vs 3 shots grid,
a fine-tuned model in memory with its own hash, an exported PNG, and the sweep read back by rs.open
in an interpreter that never imports torch.

``RECALLSCOPE_NOTEBOOK_OUT=path.ipynb`` also saves the executed notebook there."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recallscope.display import VERDICT_COLOURS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    # nbclient, nbformat and ipykernel are in the test extra: a missing one fails here, never skips
    import nbclient
    import nbformat

    work = tmp_path_factory.mktemp("quickstart")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as mp:  # the kernel imports this checkout's recallscope
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        mp.setenv("HF_HUB_OFFLINE", "1")
        client = nbclient.NotebookClient(
            notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(work)}}
        )
        client.execute()
    if os.environ.get("RECALLSCOPE_NOTEBOOK_OUT"):
        nbformat.write(notebook, os.environ["RECALLSCOPE_NOTEBOOK_OUT"])
    return notebook, work


def outputs(notebook, tag: str) -> list[dict]:
    cells = [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"one cell tagged {tag!r}"
    return cells[0].outputs


def text(outs: list[dict], kinds=("text/plain", "text/html")) -> str:
    parts = []
    for out in outs:
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        for kind in kinds:
            if kind in out.get("data", {}):
                parts.append(out["data"][kind])
    return "\n".join(parts)


def test_the_study_shows_its_claims_in_colour_its_top_components_and_its_progress(executed):
    notebook, _ = executed
    outs = outputs(notebook, "study")
    html = text(outs, ("text/html",))
    assert "Study · smollm2-135m · country_capital_extended · 0-shot" in html and "L23H4" in html
    shown = [v for v, (background, _) in VERDICT_COLOURS.items() if background in html]
    assert shown and all(v in html for v in shown)  # each verdict shown carries its colour
    errors = "".join(o["text"] for o in outs if o.get("output_type") == "stream" and o["name"] == "stderr")
    # progress in the notebook (stderr is no TTY there), counted in prompts, advanced to the end
    assert "patch: 100%" in errors and "prompts" in errors and "recall: 100%" in errors


def test_which_heads_move_the_subject(executed):
    notebook, _ = executed
    grid = outputs(notebook, "grid")
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in grid)  # the layer × head heatmap
    figure = next(
        o["data"]["application/vnd.plotly.v1+json"] for o in grid if "application/vnd.plotly.v1+json" in o.get("data", {})
    )
    z = figure["data"][0]["z"]  # plotly writes a NumPy array as a typed array with its shape
    shape = z["shape"] if isinstance(z, dict) else f"{len(z)}, {len(z[0])}"
    assert shape == "30, 9"  # smollm2-135m: 30 layers x 9 heads
    assert "movers" in text(outputs(notebook, "movers")) and "L23H4" in text(outputs(notebook, "movers"))


def test_what_l23h4_attends_to(executed):
    notebook, _ = executed
    shown = text(outputs(notebook, "head"))
    assert "L23H4: attention to subject" in shown
    assert "attention_to_subject" in shown and "x_token" in shown


def test_the_claims_table(executed):
    notebook, _ = executed
    shown = text(outputs(notebook, "claims"), ("text/plain",))
    assert "Mover heads move the topic" in shown and "The final layer suppresses the correct answer" in shown
    assert any(v in shown for v in VERDICT_COLOURS)
    # the deciding statistic is what the cell shows (as the CLI and the report), the primary labelled beside it
    assert "decided_value" in shown and "decided_by" in shown


def test_zero_against_three_shots_and_the_sweep_read_back_without_torch(executed, tmp_path):
    notebook, work = executed
    side_by_side = text(outputs(notebook, "sweep"), ("text/plain",))
    assert "0-shot" in side_by_side and "3-shot" in side_by_side and "L23H4" in side_by_side
    shot = text(outputs(notebook, "shot-claims"), ("text/plain",))
    assert "Few-shot prompts employ the same heads" in shot and any(v in shot for v in VERDICT_COLOURS)
    assert "Sweep — same claims as in memory: True" in text(outputs(notebook, "open"))
    # the same run directory in an interpreter that never imports torch: the same claims
    code = f"""
import sys
import recallscope as rs
claims = rs.open({str(work / "runs" / "quickstart-sweep")!r}).claims()
claims.to_pickle({str(tmp_path / "claims.pkl")!r})
print(len(claims), "torch" in sys.modules, "transformers" in sys.modules)
"""
    env = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", "/usr/bin")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    n, torch_loaded, transformers_loaded = proc.stdout.split()
    assert int(n) >= 12 and torch_loaded == "False" and transformers_loaded == "False"
    import pandas as pd

    import recallscope as rs

    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "claims.pkl"), rs.open(work / "runs" / "quickstart-sweep").claims())


def test_my_own_model_in_memory_is_another_model(executed):
    notebook, _ = executed
    lines = dict(line.split(":", 1) for line in text(outputs(notebook, "own-model"), ()).splitlines() if ":" in line)
    base, tuned = lines["base hash"].strip(), lines["tuned hash"].strip()
    assert base.startswith("sha256:") and tuned.startswith("weights:sha256:") and base != tuned
    # other patch effects: the top components' effects (% of π) moved by the fine-tune
    effects = {
        who: {r["component"]: r["effect"] for r in ast.literal_eval(lines[f"top components, {who}"].strip())}
        for who in ("base", "tuned")
    }
    assert effects["base"] != effects["tuned"] and len(effects["tuned"]) == 3


def test_a_figure_is_exported(executed):
    notebook, work = executed
    png = work / "runs" / "quickstart" / "patch.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png.stat().st_size) in text(outputs(notebook, "export"))


def test_the_committed_notebook_carries_no_outputs():
    """Outputs are made by running it (CI does): the file in the repository holds code and text only."""
    data = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert all(
        not cell.get("outputs") and not cell.get("execution_count") for cell in data["cells"] if cell["cell_type"] == "code"
    )
