"""recallscope.tasks.collect: per-batch results come back in prompt order, tensors stay tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recallscope.tasks import collect
from recallscope.tasks.prompts import Prompt


def _prompts(lengths):
    return [Prompt(text=f"p{i}", subject=f"s{i}", answer="a", template="{}", demos=(), input_ids=tuple(range(1, n + 1)),
                   subject_span=(0, 1), answer_id=7, index=i) for i, n in enumerate(lengths)]


def test_results_come_back_in_prompt_order():
    lengths = [5, 2, 9, 2, 7, 3, 1]
    prompts = _prompts(lengths)
    seen = []

    def measure(indices, batch):
        seen.append(list(indices))
        n = batch.attention_mask.sum(-1)  # each row's real length
        return {"n": n, "twice": (2 * n).numpy().astype(np.int32), "vec": torch.stack([n, -n], -1).double()}

    got = collect(prompts, 0, 3, measure)
    assert sorted(i for b in seen for i in b) == list(range(7)) and len(seen) == 3  # each prompt once
    assert got["n"].tolist() == lengths and isinstance(got["n"], torch.Tensor)
    assert got["twice"].dtype == np.int32 and got["twice"].tolist() == [2 * n for n in lengths]
    assert got["vec"].dtype == torch.float64 and got["vec"][:, 1].tolist() == [-n for n in lengths]

    with pytest.raises(ValueError, match="shape"):
        collect(prompts, 0, 3, lambda idx, b: {"x": torch.zeros(len(idx), len(b.input_ids[0]))})
