"""Progress bars: shown in a terminal and in a notebook, never with progress=False; counted in
prompts and advanced per batch; the patch engine moves the bar within a batch; the first load
of an embedded model says what it is doing."""

from __future__ import annotations

import sys
import types

import pytest

from recallscope import progress


class Recorder:
    """Stands in for a tqdm bar: records every position it is moved to."""

    def __init__(self, total):
        self.total, self.n, self.positions, self.closed = total, 0.0, [], False

    def update(self, by):
        self.n += by
        self.positions.append(self.n)

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    made: list[Recorder] = []

    def new_bar(description, total, unit):
        made.append(Recorder(total))
        made[-1].description, made[-1].unit = description, unit
        return made[-1]

    monkeypatch.setenv("RECALLSCOPE_PROGRESS", "1")
    monkeypatch.setattr(progress, "_new_bar", new_bar)
    return made


def test_a_bar_counts_prompts_and_advances_per_batch(bars):
    batches = [list(range(16)), list(range(16, 32)), [32]]
    seen = list(progress.track(batches, "recall", total=33, unit="prompts", weight=len))
    assert seen == batches
    assert bars[0].positions == [16, 32, 33] and bars[0].unit == "prompts" and bars[0].closed


def test_step_moves_the_bar_within_the_current_batch(bars):
    for i, batch in enumerate(progress.track([[0, 1, 2, 3], [4, 5]], "patch", total=6, unit="prompts", weight=len)):
        progress.step(1, 4)  # a quarter of this batch's work done
        assert bars[0].n == pytest.approx([1.0, 4.5][i])
        progress.step(4, 4)
    assert bars[0].positions == pytest.approx([1.0, 4.0, 4.5, 6.0])
    progress.step(1, 2)  # no bar active: nothing moves, nothing fails
    assert bars[0].n == 6


def test_progress_false_is_quiet_everywhere(monkeypatch, capsys):
    monkeypatch.setenv("RECALLSCOPE_PROGRESS", "1")
    _pretend_notebook(monkeypatch)
    assert list(progress.track(range(3), "x", total=3, enabled=False)) == [0, 1, 2]
    with progress.working("converting", "a while", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def _pretend_notebook(monkeypatch):
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_a_notebook_shows_bars_although_stderr_is_no_terminal(monkeypatch, capsys):
    monkeypatch.delenv("RECALLSCOPE_PROGRESS", raising=False)
    assert not sys.stderr.isatty()
    assert not progress.visible(True)
    _pretend_notebook(monkeypatch)
    assert progress.in_notebook() and progress.visible(True)
    monkeypatch.setattr(progress, "_has_widgets", lambda: False)  # tqdm's text bar on stderr
    list(progress.track([[0, 1], [2]], "movers", total=3, unit="prompts", weight=len))
    err = capsys.readouterr().err
    # the finished bar stays in the cell's output (a terminal's is cleared), counted in prompts
    assert "movers: 100%" in err and "3/3 prompts" in err


def test_the_patch_stage_advances_per_batch_and_within_each(bars):
    from recallscope.models import load_model
    from recallscope.patch import PatchConfig, patch
    from recallscope.recall import recall
    from recallscope.tasks import build_prompts, load_relation

    model = load_model("planted")
    prompts = build_prompts(load_relation("paper_country_capital"), model.tokenizer)
    known = recall(model, prompts, progress=False).known
    result = patch(model, known, PatchConfig(batch_size=4, attribution=False))
    bar = next(b for b in bars if b.description == "patch")
    n = len(result.prompts)
    assert bar.unit == "prompts" and bar.total == n and bar.positions[-1] == pytest.approx(n)
    # the bar moved inside a batch (a fractional position) before the first batch was done
    first = min(4, n)
    inside = [p for p in bar.positions if 0 < p < first]
    assert inside and any(p != int(p) for p in inside)


def test_the_first_load_of_an_embedded_model_says_what_it_does(monkeypatch, tmp_path, capsys):
    """With an empty cache the GGUF file is de-quantised: a line says so, and how long it usually takes."""
    from recallscope.models import loading

    monkeypatch.setenv("RECALLSCOPE_CACHE", str(tmp_path))
    calls = []

    class Stop(Exception):
        pass

    def gguf_file(source):  # stop right after the announcement: the conversion itself is ~20 s
        calls.append(source.alias)
        raise Stop

    monkeypatch.setattr(loading.gguf, "gguf_file", gguf_file)
    with pytest.raises(Stop):
        loading.load_embedded("smollm2-135m", loading.torch.float32)
    err = capsys.readouterr().err
    assert calls == ["smollm2-135m"]
    assert "first load of smollm2-135m: de-quantising its GGUF file" in err and loading.CONVERSION_USUALLY in err
