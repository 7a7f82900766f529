"""Issue 25, item 3 and the cache half of item 2: non-finite weights refused at load naming the
tensor; wrong-typed config fields and truncated weight files of a local model folder in one line;
a cache index validated (an index that lists nothing is rebuilt, every listed file hashed); the
cache entry locked (three concurrent first loads of an empty cache all succeed); devices and
thread counts checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recallscope.errors import UserError
from recallscope.models import gguf
from recallscope.models.checks import config_type_errors, named_tensors, nonfinite
from recallscope.models.loading import EMBEDDED, _device, load_model, max_threads, set_threads

SMOL = EMBEDDED["smollm2-135m"]
ROOT = Path(__file__).resolve().parents[2]


def tiny_llama(folder: Path, edit=None) -> Path:
    """A random 1-layer Llama with smollm2's tokenizer as a local model folder; ``edit(model)`` first."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(gguf.cache_dir(SMOL) / name, folder / name)
    return folder


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.model.norm.weight.__setitem__(3, float("nan")), "weight ln_final.weight holds 1 NaN value (of 16)"),
        (
            lambda m: m.model.layers[0].mlp.down_proj.weight.__setitem__((0, 0), float("inf")),
            "weight layers.0.W_out holds 1 infinite value (of 512)",
        ),
    ],
    ids=["one NaN in the final norm", "+inf in an MLP weight"],
)
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tmp_path, edit, message):
    """The reported cases: with one NaN in the final norm (or a +inf weight) recall said accuracy 1.0,
    16/16 known, and ``run`` exited 0 with verdicts."""
    folder = tiny_llama(tmp_path / "m", edit)
    with pytest.raises(UserError) as exc:
        load_model(str(folder))
    assert str(exc.value) == f"--model {folder}: {message}; recallscope does not analyse a model with non-finite weights"


def test_nonfinite_names_the_first_bad_tensor_of_any_weights():
    from helpers.tiny import tiny_view

    view = tiny_view("llama_gqa")
    assert nonfinite(view.weights) is None
    names = dict(named_tensors(view.weights))
    assert "layers.1.W_Q" in names and "ln_final.weight" in names
    names["layers.1.W_Q"][0, 0, 1] = float("-inf")
    names["layers.1.W_Q"][0, 1, 1] = float("nan")
    assert nonfinite(view.weights) == ("layers.1.W_Q", 1, 1, names["layers.1.W_Q"].numel())


def test_a_wrong_typed_config_field_is_one_line(tmp_path):
    folder = tiny_llama(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = "one"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=rf"^--model {folder}: not a loadable model directory \(\w+: .*num_hidden_layers"):
        load_model(str(folder))
    config["num_hidden_layers"] = 1
    config["rms_norm_eps"] = "tiny"  # accepted by transformers; the view would compute with a string
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=rf"^--model {folder}: not a loadable model directory \(\w+: .*rms_norm_eps"):
        load_model(str(folder))


def test_a_truncated_weight_file_is_one_line(tmp_path):
    folder = tiny_llama(tmp_path / "m")
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(UserError, match=rf"^--model {folder}: not a loadable model directory \("):
        load_model(str(folder))


def test_config_type_errors_names_the_field():
    from helpers.tiny import tiny_view
    import dataclasses

    cfg = tiny_view("llama_gqa").cfg
    assert config_type_errors(cfg) == []
    bad = dataclasses.replace(cfg, norm_eps="tiny", n_heads=2.0, final_softcap=float("nan"))
    assert config_type_errors(bad) == ["n_heads = 2.0 (float)", "norm_eps = 'tiny' (str)", "final_softcap = nan (float)"]


@pytest.mark.parametrize("device", ["mps", "meta", "xla", "cuda:7", "gpu"])
def test_devices_other_than_cpu_and_cuda_are_refused(device):
    with pytest.raises(UserError, match=r"^--device "):
        _device(device)
    assert _device("cpu") == torch.device("cpu")


def test_a_thread_count_past_what_the_machine_can_start_is_refused():
    """``--threads 100000``: OpenMP aborted the process (more threads than RLIMIT_NPROC allows)."""
    limit = max_threads()
    assert limit >= os.cpu_count() // 2 and limit < 100000
    before = torch.get_num_threads()
    with pytest.raises(UserError, match=rf"^--threads must be in 1\.\.{limit} "):
        set_threads(100000)
    assert torch.get_num_threads() == before


# ----------------------------------------------------------------------------- the cache index
def index_of(directory: Path) -> dict:
    return json.loads((directory / gguf.INDEX).read_text())


@pytest.fixture
def cache_copy(tmp_path, monkeypatch):
    """A private copy of the smollm2 weight cache as RECALLSCOPE_CACHE. The two large weight files are
    hard links (no 1 GB copy), which the tests only ever unlink and replace, never write through
    (that would write into the shared cache); every other file is a copy."""
    original = gguf.cache_dir(SMOL)
    assert gguf.cache_is_valid(original)
    monkeypatch.setenv("RECALLSCOPE_CACHE", str(tmp_path / "cache"))
    copy = gguf.cache_dir(SMOL)

    def copy_or_link(src, dst):
        if Path(src).name in ("model.safetensors", "view.safetensors"):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    # another process may be writing a temporary file there (.view-*.safetensors): never copied
    shutil.copytree(original, copy, copy_function=copy_or_link, ignore=shutil.ignore_patterns(".*"))
    yield copy
    assert gguf.cache_is_valid(original), "a test wrote into the shared cache"


@pytest.mark.parametrize(
    "index",
    [
        {"files": {}},
        {"files": []},
        {"files": {"model.safetensors": 3, "config.json": 4}},
        {"files": {"model.safetensors": {"size": "big", "sha256": "x"}}},
        [],
    ],
    ids=["lists nothing", "files a list", "entries numbers", "wrong field types", "not an object"],
)
def test_an_index_that_does_not_vouch_for_the_cache_is_invalid(cache_copy, index):
    """The reported case: an index listing no files made every hash check vacuous, so a tampered
    weight file (an inf) was loaded; wrong types raised a traceback."""
    (cache_copy / gguf.INDEX).write_text(json.dumps(index))
    assert not gguf.cache_is_valid(cache_copy)
    assert gguf.recorded_sha256(cache_copy, "model.safetensors") is None


def test_a_file_the_index_does_not_list_makes_the_cache_invalid(cache_copy):
    assert gguf.cache_is_valid(cache_copy, skip=("model.safetensors",))
    (cache_copy / "model.safetensors.index.json").write_text("{}")  # transformers would read shards from it
    assert not gguf.cache_is_valid(cache_copy, skip=("model.safetensors",))


@pytest.mark.slow
def test_a_tampered_cache_whose_index_lists_nothing_is_rebuilt_and_loads_finite(cache_copy, capfd):
    from safetensors.torch import load_file, save_file

    for name in ("view.json", "view.safetensors"):
        (cache_copy / name).unlink()
    weights = cache_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"][0] = float("inf")
    weights.unlink()  # a hard link: write a new file, never through the shared one
    save_file(tensors, weights, metadata={"format": "pt"})
    (cache_copy / gguf.INDEX).write_text(json.dumps({"files": {}}))
    model = load_model("smollm2-135m")
    assert model.info["cache_rebuilt"] is True and nonfinite(model.view.weights) is None
    assert "failed its hash check; rebuilding it from the GGUF file" in capfd.readouterr().err
    assert set(index_of(cache_copy)["files"]) >= {"model.safetensors", "config.json"}


@pytest.mark.slow
def test_a_tampered_cache_with_a_matching_index_is_refused_naming_the_tensor(cache_copy):
    """An index rewritten to match the tampered file (every hash checks out): the weights' own check refuses."""
    from safetensors.torch import load_file, save_file

    for name in ("view.json", "view.safetensors"):
        (cache_copy / name).unlink()
    weights = cache_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"][5] = float("nan")
    weights.unlink()
    save_file(tensors, weights, metadata={"format": "pt"})
    index = index_of(cache_copy)
    index["files"]["model.safetensors"] = {"size": weights.stat().st_size, "sha256": gguf.sha256_of([weights])}
    (cache_copy / gguf.INDEX).write_text(json.dumps(index))
    with pytest.raises(UserError) as exc:
        load_model("smollm2-135m")
    assert str(exc.value) == (
        "--model smollm2-135m: weight ln_final.weight holds 1 NaN value (of 576); "
        "recallscope does not analyse a model with non-finite weights"
    )
    assert not (cache_copy / "view.safetensors").exists()  # never cached


@pytest.mark.slow
def test_three_concurrent_first_loads_of_an_empty_cache_all_succeed(tmp_path):
    """The reported case: three commands on an empty model cache, two crashed (one deleted the cache
    directory while another wrote it). One builds it under the entry's lock; the others wait, then read it."""
    env = {
        **os.environ,
        "RECALLSCOPE_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    code = "from recallscope.models import load_model; m = load_model('smollm2-135m'); print(m.info['loaded_from'])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1][-2000:] for r in results]
    sources = sorted(r[0].strip() for r in results)
    assert sources.count("gguf") == 1 and len(sources) == 3, sources  # one built it, the others read what it wrote
    directory = tmp_path / "cache" / "models" / gguf.cache_dir(SMOL).name
    assert gguf.cache_is_valid(directory)
    assert sorted(p.name for p in directory.parent.iterdir()) == [f".{directory.name}.lock", directory.name]


def test_a_read_only_cache_that_is_valid_loads_and_one_that_must_be_written_says_so(cache_copy, monkeypatch, capfd):
    """A cache the process cannot write: a valid one is read (no lock needed: nobody can write it);
    the view cache it cannot add costs one note, not the load (it was a traceback)."""
    import errno

    from recallscope.models import viewcache

    for name in ("view.json", "view.safetensors"):
        (cache_copy / name).unlink()

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(viewcache, "save", refuse)
    model = load_model("smollm2-135m")
    assert model.info["loaded_from"] == "cache"
    err = capfd.readouterr().err
    assert err.strip() == (
        f"recallscope: the view cache in {cache_copy} cannot be written (Read-only file system); later loads go through transformers"
    )
