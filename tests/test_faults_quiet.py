"""Issue 16, "also seen": no library noise on stderr — the intercept read back from a run
directory's Parquet table is a writable array (torch warned "The given NumPy array is not
writable" when handed the read-only buffer)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from recallscope.decompose import intercept_from_frame


def test_also_seen_intercept_read_from_parquet_is_writable(tmp_path):
    vector = np.linspace(-1.0, 1.0, 64)
    frame = pd.DataFrame({"layer": [3], "head": [-1], "fold": [-1], "value": [np.nan], "vector": [vector],
                          "regressor": ["b"], "kind": ["intercept"]})
    frame.to_parquet(tmp_path / "decompose.parquet")
    read = pd.read_parquet(tmp_path / "decompose.parquet")
    assert not np.asarray(read.iloc[0]["vector"]).flags.writeable  # what Parquet hands back
    layer, b = intercept_from_frame(read)
    assert layer == 3 and b.flags.writeable and np.array_equal(b, vector)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.as_tensor(b).shape == (64,)
