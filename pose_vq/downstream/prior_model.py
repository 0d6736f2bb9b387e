"""A class-conditional transformer over token grids with classifier-free guidance, in one
of two orders (``order``): a masked-token model (MaskGIT, Chang et al. 2022, as MAGVIT
uses it for video tokens) or a causal one over the flattened grid (a GPT, as T2M-GPT).

Masked or causal: a clip's tokens are a (t, h, w) grid whose cells depend on each other
in every direction; MaskGIT decodes the whole grid in a handful of parallel steps (8 by
default) where a causal model needs one step per token (512 on the demo's grid), but a
causal model's held-out NLL is exact where the masked one's is a bound. Measured on the
demo export (8 x 8 x 8 cells of 256 codes, 176 held-out clips), each order trained and
evaluated at identical settings (width 64, depth 3, 1000 steps at batch 16; masked with
axial attention, causal with full causal attention; guidance 2, temperature 1), one
after the other on 2 CPU cores shared with other work:

    python -m pose_vq.downstream.prior --config=configs/prior_demo.py --workdir=DIR \
        --config.tokens=<export> --config.model.order=masked|causal

    order   training  held-out NLL        top-1  Frechet  diversity  sampling, 32 clips
    masked    971 s   3.81 bits (bound)   0.557   211.6      7.73     6.2 s (8 steps)
    causal  ~1650 s   3.43 bits (exact)   0.250   161.6     17.41     8.4 s (512 steps)

(ground truth: top-1 0.727, diversity 12.52; decoded real tokens: Frechet 104.2; random
grids: 0.148, 327.5, 16.97). Mixed: the causal prior's samples are closer in Frechet
distance, but carry the label far less (34% of the real clips' top-1 against 77%) and
spread like random grids (diversity above the real clips'). More guidance or a lower
temperature raises its top-1 (0.466 at guidance 4, temperature 0.7, Frechet 177) but at
no setting tried (guidance 0 to 8, temperature 1 and 0.7) to the masked prior's (0.540 to
0.574 at guidance 2 and 4, temperature 1 and 0.7). The masked order stays the default: the
conditional accuracy gap is the larger, and it trains in 0.6x the time.

The grid (B, t, h, w) is one sequence of N = t h w positions, with a trailing stage axis
(B, t, h, w, S) for a residual quantizer: one position per cell, its input the sum of
one embedding per stage (each stage's table has the K codes and a mask entry, id K), its
output S heads of K logits, one per stage, predicted independently given the context. A
masked cell is masked in every stage. Every position also adds the embedding of the
clip's label, or of the null class ``num_classes`` (classifier-free guidance: training
drops the label with probability ``label_dropout``; sampling takes
``cond + g (cond - uncond)``, Muse's form, so g = 0 is the conditional model).
``attention="axial"`` (the masked default) attends within each time step's h w cells,
then across each cell's t steps, in every block (TimeSformer's divided attention): on the
compact demo's 8 x 8 x 8 grid a training step took 0.45x the time of full attention over all
512 cells (0.94 s against 2.08 s at width 64, depth 3, batch 16 over 2 CPU devices, on
2 cores shared with other work); ``"full"`` is MaskGIT's own.

Masked: training masks a cosine share of each clip's cells, cos(pi/2 r) with r ~ U[0, 1)
(at least one cell), and scores the cross-entropy of the masked cells' ids. Sampling
starts from an all-masked grid; each step samples every masked cell, keeps the most
confident ones (log-probability plus Gumbel noise annealed to 0, MaskGIT's re-masking)
and masks the rest again, N cos(pi/2 (i + 1) / steps) of them after step i, none after
the last.

Causal: the same body with full attention under a causal mask, raster order (t, then h,
then w). Position i's input is the stage embeddings of cell i - 1 (position 0's the
start entry, id K) plus cell i's position and the label, so position 0 is predicted from
the label alone and cell i from the label and the cells before it. Training scores every
cell's cross-entropy, teacher-forced; sampling draws one cell a step (its S stages
independently), a position a network call with the earlier keys and values cached
(``decode``); the held-out NLL is the chain rule's exact sum.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose_vq.downstream.probe_head import dense, layer_norm, self_attention
from pose_vq.sharding import logical

LN2 = math.log(2.0)


ORDERS = ("masked", "causal")
NLL_KIND = {"masked": "any-order bound", "causal": "exact"}  # what ``nll_bits`` returns


class TokenPrior(nn.Module):
    """Logits (B, N, S, K) of every cell's ids given a label and, by ``order``, the
    unmasked cells (masked) or the cells before it in raster order (causal)."""

    num_codes: int  # K
    stages: int  # S (1: a grid without a stage axis)
    grid: tuple[int, int, int]  # (t, h, w)
    num_classes: int  # the null class is id num_classes
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    attention: str = "axial"  # masked order: full (all N cells) or axial (a step, then a cell)
    order: str = "masked"  # or causal: full attention over the earlier cells in raster order
    decode: bool = False  # causal: one position a call, earlier keys and values cached (sampling)

    def _attention(self, name: str, x: jax.Array, train: bool,
                   mask: jax.Array | None = None) -> jax.Array:
        """Pre-LN self-attention over axis 1 of (B', L, width), dropped out."""
        y = layer_norm(f"{name}_norm")(x)
        y = self_attention(self.num_heads, self.dropout, train, name, decode=self.decode)(
            y, y, mask=mask)
        return nn.Dropout(self.dropout, deterministic=not train)(y)

    @property
    def positions(self) -> int:
        return math.prod(self.grid)

    @nn.compact
    def __call__(self, ids: jax.Array, masked: jax.Array | None, labels: jax.Array, *,
                 train: bool = False) -> jax.Array:
        """``ids`` (B, N, S) int, ``masked`` (B, N) bool (the causal order ignores it),
        ``labels`` (B,) int in [0, num_classes] -> float32 logits (B, N, S, K). With
        ``decode`` (causal), a call after the cache's initialisation takes the ids of
        the previous cell (B, 1, S) (K, the start entry, before position 0) and returns
        the next position's logits (B, 1, S, K)."""
        if self.order not in ORDERS:
            raise ValueError(f"order={self.order!r}: choose 'masked' or 'causal'")
        if self.decode and self.order != "causal":
            raise ValueError("decode=True is the causal order's: a masked prior decodes "
                             "all cells at once")
        b, n, s = ids.shape
        stepping = self.decode and self.has_variable("cache", "position")
        if self.order == "masked":
            ids = jnp.where(masked[..., None], self.num_codes, ids)
        elif not stepping:  # each position reads the cell before it, position 0 the start
            ids = jnp.concatenate([jnp.full((b, 1, s), self.num_codes, ids.dtype),
                                   ids[:, :-1]], axis=1)
        init = logical(nn.initializers.normal(0.02), "codes", "embed")
        x = sum(nn.Embed(self.num_codes + 1, self.width, embedding_init=init,
                         name=f"token_embed_{i}")(ids[..., i]) for i in range(s))
        t, h, w = self.grid  # factorised position embedding: time + row + column
        pos = [self.param(f"pos_{a}", logical(nn.initializers.normal(0.02), "frames", "embed"),
                          (size, self.width)) for a, size in zip("thw", self.grid)]
        pos = (pos[0][:, None, None] + pos[1][None, :, None] + pos[2][None, None, :]
               ).reshape(t * h * w, self.width)
        if self.decode:
            position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
            if stepping:
                pos = jax.lax.dynamic_slice_in_dim(pos, position.value, 1)
                position.value = position.value + 1
        label = nn.Embed(self.num_classes + 1, self.width, name="label_embed",
                         embedding_init=logical(nn.initializers.normal(0.02), "outputs", "embed"))
        x = nn.Dropout(self.dropout, deterministic=not train)(x + pos + label(labels)[:, None])
        causal = None  # the cache masks the positions not yet decoded itself
        if self.order == "causal" and not stepping:
            causal = nn.make_causal_mask(jnp.ones((b, n), bool))
        for i in range(self.depth):
            if self.order == "causal" or self.attention == "full":
                x = x + self._attention(f"attn_{i}", x, train, causal)
            elif self.attention == "axial":  # within each time step, then across steps
                x = x.reshape(b * t, h * w, self.width)
                x = x + self._attention(f"attn_space_{i}", x, train)
                x = x.reshape(b, t, h * w, self.width).transpose(0, 2, 1, 3).reshape(
                    b * h * w, t, self.width)
                x = x + self._attention(f"attn_time_{i}", x, train)
                x = x.reshape(b, h * w, t, self.width).transpose(0, 2, 1, 3).reshape(
                    b, n, self.width)
            else:
                raise ValueError(f"attention={self.attention!r}: choose 'full' or 'axial'")
            y = dense(int(self.mlp_ratio * self.width), ("embed", "mlp"), f"fc1_{i}")(
                layer_norm(f"norm2_{i}")(x))
            y = dense(self.width, ("mlp", "embed"), f"fc2_{i}")(nn.gelu(y))
            x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
        x = layer_norm("norm")(x)
        return jnp.stack([dense(self.num_codes, ("embed", "codes"), f"head_{i}")(x)
                          for i in range(s)], axis=2).astype(jnp.float32)

    # ---------------------------------------------------------------- grid <-> sequence

    def to_sequence(self, grids: jax.Array) -> jax.Array:
        """(B, t, h, w[, S]) -> (B, N, S)."""
        return grids.reshape(grids.shape[0], self.positions, self.stages)

    def to_grid(self, ids: jax.Array) -> jax.Array:
        """(B, N, S) -> (B, t, h, w) or (B, t, h, w, S): the export's token shape."""
        tail = (self.stages,) if self.stages > 1 else ()
        return ids.reshape((ids.shape[0], *self.grid, *tail))


def cosine_mask_ratio(r: jax.Array) -> jax.Array:
    """MaskGIT's schedule: the share of cells masked at progress r in [0, 1]."""
    return jnp.cos(0.5 * jnp.pi * r)


def mask_with_counts(key: jax.Array, counts: jax.Array, n: int) -> jax.Array:
    """(B, n) bool: ``counts[b]`` cells of row b masked, chosen uniformly at random."""
    scores = jax.random.uniform(key, (counts.shape[0], n))
    ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
    return ranks < counts[:, None]


def training_mask(key: jax.Array, batch: int, n: int) -> jax.Array:
    """(B, n) bool: ceil(cos(pi/2 r) n) cells of each row masked (at least one), one
    r ~ U[0, 1) per row."""
    k_ratio, k_cells = jax.random.split(key)
    ratio = cosine_mask_ratio(jax.random.uniform(k_ratio, (batch,)))
    counts = jnp.clip(jnp.ceil(ratio * n).astype(jnp.int32), 1, n)
    return mask_with_counts(k_cells, counts, n)


def decoding_counts(n: int, steps: int) -> np.ndarray:
    """Cells still masked after each of ``steps`` decoding steps: floor(n cos(pi/2 (i + 1)
    / steps)), but at least one fewer than before the step and, before the last, at least
    1 (while any is left); none after the last."""
    counts, left = [], n
    for i in range(steps):
        scheduled = math.floor(n * math.cos(0.5 * math.pi * (i + 1) / steps))
        left = 0 if i == steps - 1 else max(0, min(left - 1, max(1, scheduled)))
        counts.append(left)
    return np.array(counts)


def token_loss(logits: jax.Array, ids: jax.Array, masked: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy (nats) and accuracy of the masked cells' ids, over every
    (masked cell, stage)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]  # (B, N, S)
    weight = jnp.broadcast_to(masked[..., None], nll.shape).astype(jnp.float32)
    total = jnp.maximum(weight.sum(), 1.0)
    correct = (logits.argmax(-1) == ids).astype(jnp.float32)
    return (nll * weight).sum() / total, (correct * weight).sum() / total


def guide(both: jax.Array, guidance: float | jax.Array) -> jax.Array:
    """Classifier-free guidance of logits stacked (conditional; unconditional) on axis 0:
    cond + g (cond - uncond)."""
    cond, uncond = jnp.split(both, 2)
    return cond + guidance * (cond - uncond)


def guided_logits(model: TokenPrior, variables: dict, ids: jax.Array, masked: jax.Array | None,
                  labels: jax.Array, guidance: float | jax.Array) -> jax.Array:
    """Classifier-free guidance: cond + g (cond - uncond), one call on the batch twice
    (the labels, then the null class)."""
    null = jnp.full_like(labels, model.num_classes)
    both = model.apply(variables, jnp.concatenate([ids, ids]),
                       None if masked is None else jnp.concatenate([masked, masked]),
                       jnp.concatenate([labels, null]))
    return guide(both, guidance)


def sample(model: TokenPrior, variables: dict, key: jax.Array, labels: jax.Array, *,
           steps: int = 8, guidance: float = 2.0, temperature: float = 1.0,
           mask_temperature: float = 4.5) -> tuple[jax.Array, jax.Array]:
    """Token grids for ``labels`` (B,) and the step (0-based) that fixed each cell
    (B, t, h, w): a causal prior's ``sample_causal`` (``steps`` and ``mask_temperature``
    unused), else MaskGIT's iterative decoding.

    Each step samples every masked cell's ids from the guided logits at ``temperature``
    and keeps the ``decoding_counts`` most confident; a cell's confidence is the sum of
    its stages' log-probabilities plus Gumbel noise times ``mask_temperature (1 - (i +
    1) / steps)`` (MaskGIT's choice temperature, 4.5 in its release). Jit it with
    ``steps`` static."""
    if model.order == "causal":
        return sample_causal(model, variables, key, labels, guidance=guidance,
                             temperature=temperature)
    b, n, s = labels.shape[0], model.positions, model.stages
    counts = jnp.asarray(decoding_counts(n, steps))
    ids = jnp.zeros((b, n, s), jnp.int32)
    masked = jnp.ones((b, n), bool)
    decided = jnp.full((b, n), steps, jnp.int32)

    def step(i, carry):
        ids, masked, decided = carry
        k_ids, k_noise = jax.random.split(jax.random.fold_in(key, i))
        logits = guided_logits(model, variables, ids, masked, labels, guidance)
        logits = logits / jnp.maximum(temperature, 1e-6)
        drawn = jax.random.categorical(k_ids, logits, axis=-1)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), drawn[..., None],
                                   axis=-1)[..., 0].sum(-1)
        ids = jnp.where(masked[..., None], drawn, ids)
        anneal = mask_temperature * (1.0 - (i + 1) / steps)
        confidence = jnp.where(masked, logp + anneal * jax.random.gumbel(k_noise, (b, n)),
                               jnp.inf)
        ranks = jnp.argsort(jnp.argsort(confidence, axis=1), axis=1)
        still = ranks < counts[i]
        decided = jnp.where(masked & ~still, i, decided)
        return ids, still, decided

    ids, _, decided = jax.lax.fori_loop(0, steps, step, (ids, masked, decided))
    return model.to_grid(ids), decided.reshape((b, *model.grid))


def sample_causal(model: TokenPrior, variables: dict, key: jax.Array, labels: jax.Array, *,
                  guidance: float = 2.0, temperature: float = 1.0
                  ) -> tuple[jax.Array, jax.Array]:
    """A causal prior's grids for ``labels`` (B,), one cell a step in raster order (its
    stages drawn independently from the guided logits at ``temperature``), and each
    cell's step, its raster index (B, t, h, w). Each step runs one position through the
    network, the earlier positions' keys and values cached (``decode``)."""
    b, n, s = labels.shape[0], model.positions, model.stages
    step_model = model.clone(decode=True)
    both = jnp.concatenate([labels, jnp.full_like(labels, model.num_classes)])
    shapes = jax.eval_shape(step_model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((2 * b, n, s), jnp.int32), None, both)
    cache = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes["cache"])

    def step(i, carry):
        ids, previous, cache = carry
        logits, updated = step_model.apply({**variables, "cache": cache}, previous, None, both,
                                           mutable=["cache"])
        logits = guide(logits[:, 0], guidance) / jnp.maximum(temperature, 1e-6)  # (B, S, K)
        drawn = jax.random.categorical(jax.random.fold_in(key, i), logits, axis=-1)
        ids = jax.lax.dynamic_update_slice_in_dim(ids, drawn[:, None], i, axis=1)
        return ids, jnp.concatenate([drawn, drawn])[:, None], updated["cache"]

    start = jnp.full((2 * b, 1, s), model.num_codes, jnp.int32)
    ids, _, _ = jax.lax.fori_loop(0, n, step, (jnp.zeros((b, n, s), jnp.int32), start, cache))
    decided = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    return model.to_grid(ids), decided.reshape((b, *model.grid))


def nll_bits(model: TokenPrior, variables: dict, key: jax.Array, grids: jax.Array,
             labels: jax.Array) -> jax.Array:
    """Per clip, -log2 p(grid | label) / (N S) in bits per token (id): a causal prior's
    exact value (``key`` unused), else one draw of the masked prior's any-order bound
    (``NLL_KIND``).

    The bound: k ~ U{1..N} cells masked at random, the mean over them and their stages of
    -log2 p(id | unmasked cells, label). Its mean over draws is the bound of an
    order-agnostic autoregressive model (Uria et al. 2014; Hoogeboom et al. 2022, ARDM)
    that the masked model defines: an upper bound on its NLL per token."""
    ids = model.to_sequence(grids)
    if model.order == "causal":  # one teacher-forced call: the chain rule in raster order
        logp = jax.nn.log_softmax(model.apply(variables, ids, None, labels), axis=-1)
        return -jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0].mean((1, 2)) / LN2
    b, n = ids.shape[:2]
    k_count, k_cells = jax.random.split(key)
    counts = jax.random.randint(k_count, (b,), 1, n + 1)
    masked = mask_with_counts(k_cells, counts, n)
    logp = jax.nn.log_softmax(model.apply(variables, ids, masked, labels), axis=-1)
    nll = -jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0].mean(-1)  # (B, N)
    return (nll * masked).sum(1) / counts / LN2
