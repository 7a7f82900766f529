"""Issue 16, "also seen": no library noise on stderr — the intercept read back from a run
directory's Parquet table is a writable array (torch warned "The given NumPy array is not
writable" when handed the read-only buffer)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from recallscope.decompose import intercept_from_table


def test_also_seen_intercept_read_from_parquet_is_writable(tmp_path):
    vector = np.linspace(-1.0, 1.0, 64)
    frame = pd.DataFrame({"layer": [3] * len(vector), "dim": np.arange(len(vector)), "value": vector})
    frame.to_parquet(tmp_path / "intercept.parquet")
    read = pd.read_parquet(tmp_path / "intercept.parquet")
    layer, b = intercept_from_table(read)
    assert layer == 3 and b.flags.writeable and np.array_equal(b, vector)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.as_tensor(b).shape == (64,)
