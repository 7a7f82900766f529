"""Control models a user can run as models: ``planted`` (every mechanism of the paper, with known
parameters) and ``random`` (random init, no mechanism).

A claim's rule is only as good as its behaviour on a model whose answer is known. Both controls
are ordinary ``transformers`` ``LlamaForCausalLM`` modules with weights set by hand (``planted``)
or drawn from a seed (``random``), loaded through the usual path (:func:`~recallscope.models.
load_model` → the Llama adapter → :class:`~recallscope.models.view.ModelView`), so the exact
view's parity with the Hugging Face module holds for them as for any Llama. Both use
SmolLM2-135M's tokenizer (vocabulary V = 49,152), read from the embedded model's weight cache
(or its GGUF file when there is no cache yet); no download, built in a few seconds.

``planted`` — made for one relation (``paper_country_capital``; any relation with at most 15 distinct
subject tokens X and answer tokens Y works). Llama shape: 3 layers, 4 query heads, 2 key/value
heads (grouped-query attention), d = 64, head width 16, MLP width 64, untied embeddings, RMS
norms with weight 1, rope θ = 10⁴. Only the relation's tokens are embedded: every other token has a
zero embedding (and the background unembedding below). The residual stream is a direct sum of
coordinate blocks (n = 15 slots; subject i of the relation, in sample order, takes slot i):

====================  ===========  ===========================================================
block                 coordinates  holds
====================  ===========  ===========================================================
e_end                 0            Γ = 1000 at every end token (the prompts' last token, " is")
f_0, f_1..f_n         1, 2..16     a subject token's embedding: W_E[X_i] = f_0 + f_i
u_1..u_n, w           17..31, 32   W_U[X_i] = λ (u_i + w)   (subject identity + subject domain)
v                     33           W_U[Y_i] = λ (u_i + v)   (same identity + answer domain)
p_1..p_n              34..48       what head L1H1 writes
q_1..q_n              49..63       what head L1H2 writes
====================  ===========  ===========================================================

Every token other than the relation's X and Y reads the p and q blocks with seeded Gaussian
weights N(0, (0.1 λ)²) and nothing else: a direction nobody planted (a random direction, or what
L1H1 and L1H2 write) reads as noise spread over the vocabulary, as in a real model, instead of
an exact tie at logit 0 (the logit lens and the random-direction baselines rank against it).

Layer 0 is empty (every weight 0), so the OV circuit through the raw embedding and through the
residual a layer-1 head reads at the subject position agree.

(a) **Mover** L1H0. Its query (from e_end) meets a key only at X (from f_i, strength k_i), at a
    rotary frequency of 3·10⁻⁴ rad per position (so position hardly matters): the score is
    s_i = 2.5 + 2·i/(n − 1) for subject i and 0 at every other position, so the attention from
    the end to X is α = e^{s_i} / (e^{s_i} + T − 1) for a T-token prompt (0.50 to 0.93 on the
    built-in prompts) and varies across prompts, as the paper's scatter needs. Its value reads
    f_0, f_i; its W_O maps them to σ w, σ u_i: the OV circuit sends X_i's representation to
    a multiple of W_U[X_i], and its end-position write is a[1,0] = α σ √(d/2) (u_i + w).
    L1H1 and L1H2 attend exactly like it (same keys and queries) but write the subject's slot
    into the p and q blocks, which only the background tokens read (not X, not Y); L1H3 writes
    nothing.
(b) **MLP 1**, at the layer of the heads (a sequential model's MLP reads its own layer's heads).
    At the end position its gate reads only e_end, so every channel's gate is G·x_0 ≈ 40 and
    SiLU is the identity to float precision (σ(40) = 1 − 4·10⁻¹⁸); each channel's up projection
    reads one coordinate of one head block (or e_end, for the intercept channel) and its down
    projection writes that coordinate back times c_h (or β along v). Hence, exactly,

        m[1] = (ρ₀² / ρ²) · (Σ_h c_h a[1,h] + b),     b = β v,  β = 2,

    with ρ² = ‖r_mid[1]‖² / d + ε the RMS norm's square and ρ₀² = Γ² / d + ε its value with no
    head written. The factor ρ₀²/ρ² = 1 / (1 + ‖Σ_h a[1,h]‖² / (Γ² + dε)) is the only departure
    from the planted linear map; the head writes are at most 0.525 in norm, so it lies within
    2.8·10⁻⁷ of 1 on every built-in prompt (real LMs carry such massive, prompt-independent activations in a few
    coordinates too). The planted coefficients are c = 2.5 (L1H0,
    amplified), 0.5 (L1H1, attenuated), −1.5 (L1H2, reversed); L1H3 writes nothing, and r[1] at
    the end position is the constant Γ e_end, so the decomposition's c for both is the
    minimum-norm 0. Logit lens of b: the n answer tokens tie at the top (every other token
    reads 0); adding b to r_mid[1] lifts Y above X.
(c) **Suppressor** L2H0 (the final layer): it attends to X like the mover and writes
    −σ_s α' (u_i + v) ∝ −W_U[Y_i] at the end — a negative direct logit attribution to Y on
    every prompt. Every other final-layer head and MLP 2 write nothing.

Read in logit units (λ/ρ_f ≈ 10, A = (1 + c_0) × the mover's write, S ≈ 0.4 A the suppressor's):
Y_i gets A + β − 2S, X_i gets 2A − S, another answer Y_j gets β − S, another subject X_j gets A,
the background tokens a little noise from L1H1 and L1H2 — so the model's top-1 is Y on every
prompt of the relation (it "knows" the facts; p(Y) from 0.59 to 0.95 at 0 shots, 0.18 to 0.84 at 3), the other answers come
next, then X; removing the suppressor raises p(Y). The figures are in
:data:`PLANTED`; tests compare the stages' findings with them.

**Demonstrations.** A k-shot prompt holds k other subject tokens (one per demonstration), and a
mover that looked at every subject token would move a mix of them. In every built-in prompt the
subject's last token X stands right before the end token (distance Δ = 1), the demonstrations'
subjects at least ten tokens earlier, so the layer-1 and layer-2 heads also score by recency: on
the seven faster rotary pairs (frequencies θ_k = 10⁴^(−2k/16), k < 7) every subject token's key
is R = 20 and the query is turned by −θ_k, adding R·Σ_k cos(θ_k (Δ − 1)); the slow pair's key
carries s_i − 7R. At Δ = 1 the two cancel and the score is s_i as above (0-shot prompts are
unchanged); at any other distance up to 10⁴ the sum is at least 0.5148·R ≈ 10.3 logits lower, so
a demonstration's subject gets e^(s_j − 10.3) of the weight a non-subject token gets: the heads
read the queried subject only, at any shot count (the attention to it is lower in longer
prompts, as T grows: 0.18 to 0.73 at 3 shots, mean 0.44). (b)'s bound holds in float32 and float64 (every block has its own coordinates, so
float rounding never mixes e_end into the head writes); bfloat16/float16 would not keep 10⁻³.

``random`` — the planted model's shape exactly (3 layers, 4 query heads, 2 key/value heads, d = 64,
head width 16, MLP width 64, untied embeddings, rope θ = 10⁴, SmolLM2's tokenizer), so that the
two controls differ only in their weights, initialised by transformers' own Llama initialiser
(normal, std 0.02; norms 1) from seed :data:`RANDOM_SEED`, with the global RNG left untouched.
It knows nothing: expect no known prompt, and run the stages on every prompt with
``--set recall.known_top_k=49152``.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..tasks import build_prompts, load_relation
from . import gguf

# ----------------------------------------------------------------------------- the planted numbers
N_SLOTS = 15  # subjects (and answers) the planted residual layout has room for
D_MODEL = 64
N_HEADS, N_KV_HEADS, D_HEAD, D_MLP = 4, 2, 16, 64
N_LAYERS = 3
GAMMA = 1000.0  # the end token's constant coordinate
LOGIT_SCALE = 10.0  # λ / ρ_f: logits per unit of residual written along u, v, w
BETA = 2.0  # |b|
MOVER_SCALE = 0.05  # σ: the W_O entries of the layer-1 heads
SUPPRESSOR_SCALE = 0.07  # σ_s
GATE_PREACTIVATION = 40.0  # G·x_0 at the end position: SiLU(40) = 40 to float precision
SCORE_LOW, SCORE_HIGH = 2.5, 4.5  # the mover's attention score for the first and last subject
BACKGROUND_SCALE, BACKGROUND_SEED = 0.1, 0  # other tokens' unembedding on the p and q blocks: N(0, (0.1 λ)²)
ROTARY_DIM = 7  # the query/key coordinate used: the lowest rotary frequency of the first half
ROPE_THETA = 10000.0
SHARP_PAIRS = tuple(range(ROTARY_DIM))  # the faster rotary pairs, which make the movers prefer the nearest subject
RECENCY = 20.0  # R: score per sharp pair
RECENCY_GAP = 0.5148  # min over Δ ≠ 1 (|Δ − 1| ≤ 10⁴) of 7 − Σ_{k<7} cos(θ_k (Δ − 1)), reached at Δ = 0 and 2

PLANTED_SHAPE = dict(
    hidden_size=D_MODEL, intermediate_size=D_MLP, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS,
    num_key_value_heads=N_KV_HEADS, head_dim=D_HEAD, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
)

# coordinates of the residual blocks
E_END, F0 = 0, 1
F = slice(2, 2 + N_SLOTS)
U = slice(17, 17 + N_SLOTS)
W_COORD, V_COORD = 32, 33
P = slice(34, 34 + N_SLOTS)
Q = slice(49, 49 + N_SLOTS)

PLANTED: dict = {
    "relation": "paper_country_capital",
    "mover": "L1H0",  # attends end -> subject, OV maps X's representation to W_U[X]
    "mlp_layer": 1,  # m[1] = Σ_h c_h a[1,h] + b (up to a factor within 4e-7 of 1)
    "coefficients": {"L1H0": 2.5, "L1H1": 0.5, "L1H2": -1.5},  # amplified, attenuated, reversed
    "idle_heads": ("L1H3", "L2H1", "L2H2", "L2H3"),  # write nothing (W_O = 0)
    "suppressor": "L2H0",  # writes ∝ −W_U[Y] at the end on every prompt
    "final_layer": 2,
    "intercept_norm": BETA,
    "intercept_direction": tuple(1.0 if k == V_COORD else 0.0 for k in range(D_MODEL)),  # v (unit)
    "subject_direction": tuple(1.0 if k == W_COORD else 0.0 for k in range(D_MODEL)),  # w (unit)
    "linearity_bound": 4e-7,  # ≥ |ρ₀²/ρ² − 1| on every built-in prompt (measured max 2.8e-7)
    "background_scale": BACKGROUND_SCALE,
}

RANDOM_SEED = 0

CONTROLS: dict[str, str] = {
    "planted": "control: 3-layer Llama on SmolLM2's tokenizer with the paper's mechanisms planted "
               "(mover L1H0, MLP 1 = Σ c·a + b, suppressor L2H0) for paper_country_capital; no download",
    "random": f"control: the planted model's shape (3-layer Llama, d=64) with random init (seed {RANDOM_SEED}), "
              "SmolLM2's tokenizer: no mechanism; no download",
}


def catalog() -> list[dict]:
    """Rows for ``recallscope models``."""
    return [
        {"model": name, "kind": "control", "installed": True, "cached": None, "description": text,
         "install": "built in; needs the embedded smollm2-135m's tokenizer", "licence": "Apache-2.0 (tokenizer)"}
        for name, text in CONTROLS.items()
    ]


def build(name: str, dtype: torch.dtype, tokenizer_source: gguf.GGUFSource):
    """(hf_model, tokenizer, info) for a control alias; ``tokenizer_source`` is the embedded
    model whose tokenizer the controls use (SmolLM2-135M)."""
    tokenizer = tokenizer_of(tokenizer_source)
    if name == "planted":
        model = planted_model(tokenizer)
        info = {"loaded_from": "built (planted)", "planted_relation": PLANTED["relation"]}
    elif name == "random":
        model = random_model(len(tokenizer), tokenizer)
        info = {"loaded_from": f"built (random, seed {RANDOM_SEED})"}
    else:
        raise UserError(f"unknown control model {name!r}; controls: {', '.join(sorted(CONTROLS))}")
    return model.to(dtype), tokenizer, info


def tokenizer_of(source: gguf.GGUFSource):
    """The embedded model's tokenizer alone: from its weight cache when that is complete, else
    from its GGUF file (~4 s; the file must be installed: :class:`UserError` otherwise)."""
    from transformers import AutoTokenizer

    directory = gguf.cache_dir(source)
    if (directory / "recallscope-cache.json").is_file() and (directory / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(directory)
    path = gguf.gguf_file(source)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _llama(vocab: int, tokenizer, **shape):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, max_position_embeddings=8192, rms_norm_eps=1e-5, hidden_act="silu",
        attention_bias=False, mlp_bias=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id, **shape,
    )
    return LlamaForCausalLM(config)


def random_model(vocab: int, tokenizer, seed: int = RANDOM_SEED):
    """The planted model's shape with transformers' Llama init drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _llama(vocab, tokenizer, initializer_range=0.02, **PLANTED_SHAPE)
    return model.eval()


def planted_tokens(tokenizer, relation: str = PLANTED["relation"]) -> dict:
    """The relation's tokens as the planted model uses them: ``subjects`` (X per slot, the subject's
    last token), ``answers`` (Y per slot), ``end`` (every prompt's last token)."""
    prompts = build_prompts(load_relation(relation), tokenizer, shots=0)
    subjects: list[int] = []
    answers: list[int] = []
    for p in prompts.prompts:
        if p.subject_id not in subjects:
            subjects.append(p.subject_id)
            answers.append(p.answer_id)
        elif answers[subjects.index(p.subject_id)] != p.answer_id:
            raise UserError(f"planted model: subject token {p.subject_id} has two answers in {relation!r}")
    end = sorted({p.input_ids[-1] for p in prompts.prompts})
    if len(subjects) > N_SLOTS or len(set(answers)) != len(answers):
        raise UserError(f"planted model: {relation!r} needs at most {N_SLOTS} distinct subject tokens, each with "
                        f"its own answer token (it has {len(subjects)} subjects, {len(set(answers))} answers)")
    if set(end) & (set(subjects) | set(answers)) or set(subjects) & set(answers):
        raise UserError(f"planted model: {relation!r} uses one token as two of subject, answer and end token")
    return {"subjects": subjects, "answers": answers, "end": end}


def _scores(n: int) -> list[float]:
    return [SCORE_LOW + (SCORE_HIGH - SCORE_LOW) * i / max(1, n - 1) for i in range(n)]


@torch.no_grad()
def planted_model(tokenizer, relation: str = PLANTED["relation"]):
    """The planted LlamaForCausalLM (float64 weights; cast by the caller). See the module docstring."""
    tokens = planted_tokens(tokenizer, relation)
    X, Y, n = tokens["subjects"], tokens["answers"], len(tokens["subjects"])
    d, dh, eps = D_MODEL, D_HEAD, 1e-5
    model = _llama(len(tokenizer), tokenizer, **PLANTED_SHAPE).double()
    for p in model.parameters():
        p.zero_()
    for name, p in model.named_parameters():
        if "norm" in name:
            p.fill_(1.0)
    slots = range(n)
    f = [F.start + i for i in slots]
    u = [U.start + i for i in slots]

    # Embedding and unembedding: only the relation's tokens are used.
    W_E = model.model.embed_tokens.weight
    for t in tokens["end"]:
        W_E[t, E_END] = GAMMA
    for i, x in enumerate(X):
        W_E[x, F0] = 1.0
        W_E[x, f[i]] = 1.0
    rho_final = math.sqrt(GAMMA**2 / d + eps)  # the final end residual's RMS is Γ/√d to within 1e-5 (relative)
    lam = LOGIT_SCALE * rho_final
    W_U = model.lm_head.weight
    # Every other token reads the p and q blocks with small seeded Gaussian weights, so that a
    # direction nobody planted (a random one, or what L1H1/L1H2 write) reads as noise spread over
    # the whole vocabulary instead of an exact tie at 0.
    generator = torch.Generator().manual_seed(BACKGROUND_SEED)
    background = torch.randn(len(tokenizer), 2 * N_SLOTS, generator=generator, dtype=torch.float64)
    W_U[:, P.start:Q.stop] = BACKGROUND_SCALE * lam * background
    for i in slots:
        W_U[X[i]] = 0.0
        W_U[Y[i]] = 0.0
        W_U[X[i], u[i]] = W_U[X[i], W_COORD] = lam
        W_U[Y[i], u[i]] = W_U[Y[i], V_COORD] = lam

    # Normalised inputs: x_0 at an end token (only e_end written), x_f at a subject token.
    x_end = GAMMA / math.sqrt(GAMMA**2 / d + eps)
    x_subject = 1.0 / math.sqrt(2.0 / d + eps)
    scale = dh**-0.5
    unit = 1.0 / (x_end * x_subject * scale)  # key weight that scores 1 against a query weight 1 on e_end
    theta = [ROPE_THETA ** (-2 * k / dh) for k in range(dh // 2)]  # rotary frequency of the pair (k, k + dh/2)
    # Recency (module docstring): on the sharp pairs the query is turned by −θ_k, so a subject token
    # at distance Δ from the end scores R·Σ_k cos(θ_k (Δ − 1)) there; the slow pair carries
    # s_i − n_sharp·R, so X right before the end (Δ = 1) scores s_i and every other subject token
    # at least RECENCY_GAP·R less.
    key = [(s - len(SHARP_PAIRS) * RECENCY) * unit for s in _scores(n)]

    def attend_subject(layer: int, writes: dict) -> None:
        """The heads in ``writes`` attend end -> X: kv head k's key reads f_i (strength k_i) at the
        lowest-frequency rotary coordinate, its value holds the subject's slot (rows 0..n−1) and f_0
        (row 15); ``writes[h](row)`` lists the (coordinate, weight) entries of W_O[h] for a value row."""
        attn = model.model.layers[layer].self_attn
        for kv in range(N_KV_HEADS):
            for i in slots:
                attn.k_proj.weight[kv * dh + ROTARY_DIM, f[i]] = key[i]
                attn.v_proj.weight[kv * dh + i, f[i]] = 1.0
            for k in SHARP_PAIRS:  # every subject token carries f_0
                attn.k_proj.weight[kv * dh + k, F0] = RECENCY * unit
            attn.v_proj.weight[kv * dh + dh - 1, F0] = 1.0
        for h, write in writes.items():
            attn.q_proj.weight[h * dh + ROTARY_DIM, E_END] = 1.0
            for k in SHARP_PAIRS:
                attn.q_proj.weight[h * dh + k, E_END] = math.cos(theta[k])
                attn.q_proj.weight[h * dh + k + dh // 2, E_END] = -math.sin(theta[k])
            for row in range(dh):
                for coord, weight in write(row):
                    attn.o_proj.weight[coord, h * dh + row] = weight

    # (a) layer 1: the mover L1H0 writes σ(u_i + w); L1H1 and L1H2 write the slot into p and q.
    sigma = MOVER_SCALE
    attend_subject(1, {
        0: lambda r: [(U.start + r, sigma)] if r < n else ([(W_COORD, sigma)] if r == dh - 1 else []),
        1: lambda r: [(P.start + r, sigma)] if r < n else [],
        2: lambda r: [(Q.start + r, sigma)] if r < n else [],
    })

    # (b) MLP 1: channel j copies one coordinate of a head block times c_h; the last channel writes b.
    c = PLANTED["coefficients"]
    blocks = [(k, c["L1H0"]) for k in [*u, W_COORD]] + [(P.start + i, c["L1H1"]) for i in slots] \
        + [(Q.start + i, c["L1H2"]) for i in slots]
    mlp = model.model.layers[1].mlp
    gate = GATE_PREACTIVATION / x_end
    silu = GATE_PREACTIVATION * torch.sigmoid(torch.tensor(GATE_PREACTIVATION, dtype=torch.float64)).item()
    rho0 = math.sqrt(GAMMA**2 / d + eps)
    # m_k = D c silu(G x_0) x_k with x_k = a_k / ρ: D = ρ₀ / silu(G x_0) makes m_k = c a_k at ρ = ρ₀.
    down = rho0 / silu
    for j, (coord, coef) in enumerate(blocks):
        mlp.gate_proj.weight[j, E_END] = gate
        mlp.up_proj.weight[j, coord] = 1.0
        mlp.down_proj.weight[coord, j] = down * coef
    j = len(blocks)
    mlp.gate_proj.weight[j, E_END] = gate
    mlp.up_proj.weight[j, E_END] = 1.0
    mlp.down_proj.weight[V_COORD, j] = BETA / (silu * x_end)

    # (c) layer 2: the suppressor L2H0 writes −σ_s (u_i + v) for the subject it attends to.
    attend_subject(2, {0: lambda r: [(U.start + r, -SUPPRESSOR_SCALE), (V_COORD, -SUPPRESSOR_SCALE)] if r < n else []})
    return model.eval()
