import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# The LRE relation files the package ships (src/recallscope/tasks/lre): a clone tests itself with no
# data beside it.
LRE_DIR = Path(__file__).resolve().parents[1] / "src" / "recallscope" / "tasks" / "lre"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded model, loaded once per test session (from the safetensors cache)."""
    from recallscope import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def every_stage_study(tmp_path_factory):
    """One run of every stage of the stage table (``pipeline.STAGES``, opt-in stages included) on the
    planted control, written to a run directory (``study.path``): the tests that walk every stage's
    tables, reprs and grids read this, so a stage added to the table is checked without naming it."""
    import recallscope as rs
    from helpers.small import SMALL_SETTINGS
    from recallscope import pipeline

    out = tmp_path_factory.mktemp("every_stage")
    study = rs.run(
        model="planted",
        relation="paper_country_capital",
        stages=list(pipeline.STAGES),
        max_prompts=12,
        out=str(out),
        progress=False,
        settings=SMALL_SETTINGS,
    )
    assert study.stages == list(pipeline.STAGES)
    return study


@pytest.fixture(scope="session")
def lre_dir() -> Path:
    """The shipped LRE relation files, as the installed package finds them (``lre/<name>``)."""
    from recallscope.tasks.relation import lre_path

    folder = lre_path("country_language").parent
    assert folder.resolve() == LRE_DIR.resolve() and len(list(folder.glob("*.json"))) == 18, folder
    return folder
