"""Models already in memory: a transformers causal LM, or the wrappers researchers hold one in.

Most interpretability work happens on a model the researcher has already loaded — a fine-tune,
an nnsight ``LanguageModel``, a TransformerLens ``TransformerBridge``. Each of these holds a
Hugging Face module, and recallscope reads that module's weights into its view without copying
them (:func:`recallscope.models.adapters.extract`: views of the parameters, detached from autograd).

- a ``transformers`` causal LM (``PreTrainedModel``): used as it is, on its device, in its dtype;
- an nnsight ``LanguageModel`` / ``NNsight`` / ``TransformersModel`` (``nnsight.Envoy``): the module
  it wraps (``envoy._module``) and its ``tokenizer``;
- a TransformerLens ``TransformerBridge`` (TransformerLens >= 3): the module it wraps
  (``bridge.original_model``) and its ``tokenizer``;
- a TransformerLens ``HookedTransformer`` (TransformerLens < 4) is refused in one line: its weights are
  TransformerLens's own rearrangement (LayerNorm folded into the next matrices, writing weights centred,
  biases moved), with no Hugging Face module behind them to read exactly; so is a ``TransformerBridge``
  after ``enable_compatibility_mode()`` with its default weight processing (TransformerLens 4's
  HookedTransformer numerics: the same rearrangement written into the module it wraps — on a Llama the
  unembedding centred, so logits move by a constant per position and near-tied lens ranks reorder).
  ``enable_compatibility_mode(no_processing=True)`` leaves the weights alone and is read as the module.

Before the view is used, its logits on a probe prompt are compared with the forward of the object
the user handed in (the wrapper's own forward where there is a wrapper): a wrapper that computes
something other than the module it holds (weights processed in place, hooks left on) is refused
rather than analysed under another model's name.

The run identity of an in-memory model is :func:`weights_hash`, a SHA-256 of the bytes of every weight the view reads:
a fine-tuned module is never confused with its base (the name alone would be the same).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any

import torch

from ..errors import UserError

HOOKED_TRANSFORMER_REFUSAL = (
    "a TransformerLens HookedTransformer holds TransformerLens's processed weights (LayerNorm folded, weights centred), "
    "not a Hugging Face module recallscope can read exactly; pass the transformers model instead "
    "(transformers.AutoModelForCausalLM.from_pretrained(name), with its tokenizer) or a TransformerBridge "
    "(transformer_lens.model_bridge.TransformerBridge.boot_transformers(name))"
)

PROCESSED_BRIDGE_REFUSAL = (
    "a TransformerBridge after enable_compatibility_mode() holds TransformerLens's processed weights (LayerNorm folded, "
    "weights and unembedding centred), not its Hugging Face module's; pass the bridge before enable_compatibility_mode() "
    "or with enable_compatibility_mode(no_processing=True), or the transformers model "
    "(transformers.AutoModelForCausalLM.from_pretrained(name), with its tokenizer)"
)

PROBE = "The capital of France is Paris. The capital of Japan is"


def is_in_memory(obj: Any) -> bool:
    """Whether ``obj`` is a model object rather than a name or path (str / os.PathLike)."""
    import os

    return not isinstance(obj, (str, os.PathLike))


def unwrap(obj: Any, tokenizer: Any = None) -> tuple[torch.nn.Module, Any, str]:
    """(the Hugging Face module, its tokenizer, what held it: "transformers" / "nnsight" / "transformer_lens").

    Raises UserError for a HookedTransformer (:data:`HOOKED_TRANSFORMER_REFUSAL`), for a TransformerBridge
    whose weights TransformerLens processed (:data:`PROCESSED_BRIDGE_REFUSAL`), for an object
    that is none of the supported kinds, and when no tokenizer is given or held by the wrapper.
    """
    kind = type(obj).__module__.split(".")[0]
    if kind == "transformer_lens" and type(obj).__name__ == "HookedTransformer":
        raise UserError(HOOKED_TRANSFORMER_REFUSAL)
    if kind == "transformer_lens" and getattr(obj, "_weights_processed", False):
        raise UserError(PROCESSED_BRIDGE_REFUSAL)
    if kind == "nnsight" and isinstance(vars(obj).get("_module"), torch.nn.Module):
        # an Envoy proxies attribute access to its module: read its own slot, not the module's
        module, held_by, held_tokenizer = vars(obj)["_module"], "nnsight", _attribute(obj, "tokenizer")
    elif kind == "transformer_lens" and isinstance(getattr(obj, "original_model", None), torch.nn.Module):
        module, held_by, held_tokenizer = obj.original_model, "transformer_lens", getattr(obj, "tokenizer", None)
    elif isinstance(obj, torch.nn.Module) and hasattr(getattr(obj, "config", None), "model_type"):
        module, held_by, held_tokenizer = obj, "transformers", None
    else:
        raise UserError(
            f"load_model: expected a model name or path, a transformers causal LM, an nnsight LanguageModel or a "
            f"TransformerLens TransformerBridge; got {type(obj).__module__}.{type(obj).__name__}"
        )
    tokenizer = tokenizer if tokenizer is not None else held_tokenizer
    if tokenizer is None:
        raise UserError(f"load_model: a {type(module).__name__} in memory needs its tokenizer: load_model(model, tokenizer)")
    if any(p.device.type == "meta" for p in module.parameters()):
        raise UserError(
            f"load_model: the {type(module).__name__} has no weights yet (meta device; an nnsight model before dispatch): "
            "load them first (nnsight: LanguageModel(name, dispatch=True))"
        )
    return module, tokenizer, held_by


def _attribute(envoy: Any, name: str) -> Any:
    try:
        return getattr(envoy, name)
    except AttributeError:
        return None


def own_tokenizer(tokenizer: Any) -> Any:
    """A copy of the user's tokenizer: recallscope sets its padding (left, a pad token) and must not
    change the object the user holds."""
    try:
        return copy.deepcopy(tokenizer)
    except Exception as exc:  # noqa: BLE001 - any failure to copy: say which tokenizer
        raise UserError(f"load_model: cannot copy the tokenizer {type(tokenizer).__name__} ({exc})") from exc


def weights_hash(cfg, weights) -> str:
    """``"weights:sha256:<hex>"``: SHA-256 of what recallscope computes with — the architecture
    (:class:`~.arch.ArchConfig`) and every tensor of the view's :class:`~.arch.Weights` (its place in
    the structure, dtype, shape and bytes). Two models get the same hash exactly when the view reads
    the same weights bit for bit: a fine-tune differs from its base after one SGD step, while the
    same module read directly, through nnsight or through a TransformerBridge hashes alike. A bias
    of zeros is hashed as no bias (it computes the same; a TransformerBridge adds a zero unembedding
    bias to the module it wraps)."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
    for path, tensor in _entries(weights):
        if tensor is not None and path.rsplit(".", 1)[-1].startswith(("b_", "bias")) and not tensor.detach().any():
            tensor = None
        if tensor is None:
            digest.update(f"|{path}|none|".encode())
            continue
        t = tensor.detach()
        digest.update(f"|{path}|{t.dtype}|{tuple(t.shape)}|".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return "weights:sha256:" + digest.hexdigest()


def _entries(obj, path: str = "weights"):
    """(path, tensor or None) for every tensor slot of a Weights structure, in a fixed order."""
    if obj is None or isinstance(obj, torch.Tensor):
        yield path, obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _entries(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _entries(value, f"{path}.{i}")
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _entries(obj[key], f"{path}.{key}")


def display_name(module: torch.nn.Module) -> str:
    """A name for an in-memory model: what it was loaded from (the last part of its path or hub id), marked in memory."""
    source = str(getattr(module.config, "_name_or_path", "") or "").rstrip("/")
    label = source.split("/")[-1] if source else type(module).__name__
    return f"{label} (in memory)"


@torch.no_grad()
def parity(obj: Any, module: torch.nn.Module, view, tokenizer) -> float:
    """Max |logit difference| at the last position of :data:`PROBE` between the view and ``obj``'s own
    forward (the wrapper's where there is one), in the module's dtype, relative to the largest |logit|."""
    ids = torch.as_tensor([tokenizer(PROBE)["input_ids"]], device=view.device)
    mask = torch.ones_like(ids)
    ours = view.trace(ids, mask, record=["logits"]).logits[0, 0].float()
    training = module.training
    module.eval()  # dropout off for the comparison; the user's mode is put back
    try:
        out = obj(ids) if type(obj).__module__.split(".")[0] == "transformer_lens" else module(input_ids=ids, attention_mask=mask)
    finally:
        module.train(training)
    theirs = (out.logits if hasattr(out, "logits") else out)[0, -1].float().to(ours.device)
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-6))
