"""scripts/check_imports.py: the package's imports go one way, and a bad import is named."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_imports.py"
PACKAGE = ROOT / "src" / "recallscope"


def check(src: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(src)], capture_output=True, text=True, timeout=60)


def test_the_package_passes():
    proc = check(PACKAGE)
    assert proc.returncode == 0, proc.stderr
    assert "imports go one way, no cycle" in proc.stdout


@pytest.fixture
def copy(tmp_path) -> Path:
    dest = tmp_path / "recallscope"
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def add_line(path: Path, after: str, line: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert after in text
    path.write_text(text.replace(after, after + line, 1), encoding="utf-8")


def test_an_analysis_module_importing_the_run_layer_fails_and_is_named(copy):
    add_line(copy / "decompose.py", "from .errors import UserError\n", "from .pipeline import STAGES\n")
    proc = check(copy)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert any(
        "recallscope.decompose (line" in l and "imports recallscope.pipeline" in l and "analysis module" in l for l in lines
    )
    # pipeline imports decompose: the same import is also a cycle
    assert any(l.startswith("check_imports: import cycle among recallscope.decompose, recallscope.pipeline") for l in lines)


def test_a_cycle_hidden_inside_a_function_still_counts(copy):
    add_line(copy / "stats.py", "import numpy as np\n", "\n\ndef _hidden():\n    from .lens import logit_lens\n")
    add_line(copy / "lens.py", "import torch\n", "from . import stats\n")
    proc = check(copy)
    assert proc.returncode == 1
    assert "import cycle among recallscope.lens, recallscope.stats" in proc.stderr


def test_a_core_module_importing_a_stage_fails(copy):
    add_line(copy / "lens.py", "import torch\n", "from .recall import recall\n")
    proc = check(copy)
    assert proc.returncode == 1
    assert "recallscope.lens (line" in proc.stderr and "a core module may not import the analysis" in proc.stderr


def test_torch_reaching_the_report_fails(copy):
    add_line(copy / "rundir.py", "import pandas as pd\n", "import torch\n")
    proc = check(copy)
    assert proc.returncode == 1
    assert "recallscope.report must not import torch, but does through recallscope.report" in proc.stderr


def test_a_module_without_a_layer_fails(copy):
    (copy / "newthing.py").write_text("X = 1\n", encoding="utf-8")
    proc = check(copy)
    assert proc.returncode == 1
    assert "recallscope.newthing: belongs to no layer" in proc.stderr


def test_importing_the_report_does_not_import_torch():
    code = "import recallscope.report, sys; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
