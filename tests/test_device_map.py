"""A model split over devices layer by layer (--device-map): every engine equals the one-device run.

This machine has one device (the CPU), so the map places every module explicitly on "cpu"
through accelerate: the split-model path is taken (accelerate's placement, the view's per-layer
device, the globals copied beside the embedding) and every stage's tables must equal the
one-device run's exactly; the transfers themselves are no-ops here. docs/scaling-out.md says how
the GPU path is checked.
"""

from __future__ import annotations

import pandas as pd
import pytest

from recallscope.errors import UserError
from recallscope.models import load_model
from recallscope.pipeline import RunConfig, execute

STAGES = ["recall", "patch", "movers", "decompose", "intercept", "suppress", "trace", "knockout", "surgery", "claims"]
SETTINGS = {
    "recall.known_top_k": 100000,  # the random model knows nothing: every prompt counts as known
    "patch.n_corruptions": 2,
    "patch.min_prompts": 1,
    "trace.n_samples": 2,
    "trace.window": 2,
    "knockout.window": 2,
    "surgery.n_null": 5,
    "surgery.n_corruptions": 2,
}
N_LAYERS = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 3-layer GPT-2 with smollm2's tokenizer, as a local model directory."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from recallscope.models import EMBEDDED
    from recallscope.models.gguf import cache_dir

    out = tmp_path_factory.mktemp("tiny_gpt2_dm")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=49152, n_positions=256, n_embd=16, n_layer=N_LAYERS, n_head=2, bos_token_id=1, eos_token_id=2)
    GPT2LMHeadModel(config).eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(cache_dir(EMBEDDED["smollm2-135m"]) / name, out / name)
    return out


def explicit_map(n_layers: int) -> dict[str, str]:
    """Every module of a GPT-2 placed by name, layer by layer, as accelerate takes a device map."""
    names = ["transformer.wte", "transformer.wpe", "transformer.ln_f", "lm_head"]
    return {**dict.fromkeys(names, "cpu"), **{f"transformer.h.{i}": "cpu" for i in range(n_layers)}}


def test_every_engine_on_a_split_model_equals_the_one_device_run(tiny, tmp_path):
    one = load_model(str(tiny))
    split = load_model(str(tiny), device_map=explicit_map(one.cfg.n_layers))
    assert split.info["device_map"] == "explicit" and split.info["layer_devices"] == ["cpu"] * N_LAYERS
    assert split.model_hash == one.model_hash
    run = RunConfig(model=str(tiny), max_prompts=8)
    out_one, out_split = tmp_path / "one", tmp_path / "split"
    _, a = execute(run, STAGES, out=str(out_one), overrides=SETTINGS, model=one, progress=False, incomplete_ok=True)
    _, b = execute(run, STAGES, out=str(out_split), overrides=SETTINGS, model=split, progress=False, incomplete_ok=True)
    assert set(a["stages"]) == set(STAGES) - set(a.get("not_measurable", {}))
    assert set(b["stages"]) == set(a["stages"]) and len(a["stages"]) >= 7 and "surgery" in a["stages"]
    tables = sorted(p.relative_to(out_one) for p in out_one.rglob("*.parquet"))
    assert tables == sorted(p.relative_to(out_split) for p in out_split.rglob("*.parquet")) and len(tables) >= 10
    for rel in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(out_one / rel), pd.read_parquet(out_split / rel), check_exact=True)


def test_a_device_map_is_refused_for_the_built_in_models():
    with pytest.raises(UserError, match="--device-map applies to hub and local models"):
        load_model("smollm2-135m", device_map="auto")


def test_a_model_that_does_not_fit_is_refused_in_one_line(tiny, tmp_path):
    # a layer offloaded to disk: its weights stay on the meta device behind accelerate's hooks
    device_map = {**explicit_map(N_LAYERS), "transformer.h.1": "disk"}
    with pytest.raises(UserError, match="does not fit on the visible devices"):
        load_model(str(tiny), device_map=device_map)
