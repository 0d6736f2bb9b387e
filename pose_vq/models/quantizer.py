"""The VQ-GAN's quantizers: channels-last latents (..., D) -> one of K codes per position.

Six kinds (``make_quantizer``), each optionally in residual stages:

* ``"ema"`` (default): codes are exponential moving averages of the encoder outputs
  assigned to them (van den Oord et al. 2017, appendix; Razavi et al. 2019). No gradient
  reaches the codebook; it lives with its statistics in the mutable ``"vq_stats"``
  collection. Supports k-means initialisation and dead-code restart.
* ``"learned"``: the paper's codebook, a parameter trained by the codebook loss.
* ``"gumbel"``: a dVAE baseline; a 1x1 projection to K logits, Gumbel-softmax in
  training, hard argmax at eval, plus a KL term to the uniform prior.
* ``"simvq"`` (Zhu et al., SimVQ): the codebook is a frozen random basis C (K, D) times
  one trained linear map W (D, D); nearest neighbour among the rows of C W, losses as
  ``learned``, so every code moves with W and none is left behind.
* ``"fsq"`` (Mentzer et al. 2023, finite scalar quantization): each of ``len(levels)``
  channels is bounded by tanh and rounded to one of ``levels[i]`` values; the code index
  is the mixed-radix number of the rounded channels. No codebook and no codebook loss.
* ``"lfq"`` (Yu et al. 2023, MAGVIT-v2, lookup-free quantization): each of log2(K)
  channels is quantized to its sign (+-1) and the index is the binary number of the
  signs; a commitment term and MAGVIT-v2's entropy penalty (per-sample entropy down,
  entropy of the batch's mean assignment up), annealed from a larger weight early on.

The latent width D the encoder emits is ``code_width``: the model width for the kinds
with a codebook, ``len(levels)`` for fsq and log2(K) for lfq.

``stages = N > 1`` (``ResidualQuantizer``): stage s quantizes what stages < s left
(residual VQ, as in SoundStream and MoMask), the decoder receives the sum of the stages'
codes and token ids gain a trailing stage axis; in training, later stages can be
dropped (``stage_dropout``).

Losses. The reference weighted the *codebook* term with ``beta`` and left the commitment
term unweighted; here, as in the VQ-VAE paper, ``beta`` weights the commitment term:
``codebook = mean((sg(z) - e)^2)``, ``commitment = beta * mean((z - sg(e))^2)``. Every
entry of ``losses`` is already weighted, so ``losses["total"]`` is their sum: what
training minimises (logged as ``loss_quantizer_*``), which differs by kind (ema: the
commitment alone; gumbel: the KL; fsq: nothing). ``q_loss`` is the number the paper
reports for every kind, (1 + beta) * mean((z - e)^2) between the values that are
quantized and the codes the decoder receives; it is only reported (evaluation, analysis
tables, training summaries), never differentiated.

Multi-device. Every statistic (cluster sizes, code sums, usage, k-means sums, LFQ's
batch entropy) is a plain sum over all batch positions. Under ``jax.jit`` with the batch
sharded along a mesh axis those sums are global (XLA inserts the all-reduce), so every
device computes the same new codebook; there is no explicit ``psum`` and no ``pmap``.
Random choices (restart vectors, k-means seeds, Gumbel noise, stage dropout) come from
the ``"vq"`` rng, which is one logical key under jit, so they agree across devices too.
Distances, rounding and entropies are computed in float32 whatever the input dtype.

State is only updated by training calls outside ``init`` (like Flax's BatchNorm), so an
``init`` on a dummy batch is harmless; training calls pass ``mutable=["vq_stats"]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from pose_vq.sharding import logical

KINDS = ("ema", "learned", "gumbel", "simvq", "fsq", "lfq")
TABLE_KINDS = ("ema", "learned", "gumbel", "simvq")  # VectorQuantizer: a table of K codes
_HIGHEST = lax.Precision.HIGHEST  # f32 matmuls even where the default is bf16 passes (TPU)

# FSQ level grids by log2 of the vocabulary: 2^8, 2^10, 2^12, 2^14 and 2^16 are the FSQ
# paper's recommendations; the others follow its rule (levels >= 5 where they fit, product
# near the power of two).
FSQ_LEVELS = {7: (5, 5, 5), 8: (8, 6, 5), 9: (8, 8, 8), 10: (8, 5, 5, 5), 11: (8, 8, 6, 5),
              12: (7, 5, 5, 5, 5), 13: (8, 8, 5, 5, 5), 14: (8, 8, 8, 6, 5),
              16: (8, 8, 8, 5, 5, 5)}


# Named quantizer settings at a vocabulary of K codes (``arm_settings``): the arms the
# vocabulary sweep compares (``pose_vq.analysis sweep --kinds``) and the paper configs
# choose from (``pose_vq.defaults.paper_config``). Residual arms split K's bits evenly
# over their stages.
ARMS = {
    "ema": "EMA codebook, dead-code restart off (the paper's)",
    "ema_restart": "EMA codebook, restart of codes used less than once per ~100 steps",
    "learned": "the paper's codebook, trained by the codebook loss",
    "simvq": "frozen random basis times a trained linear map",
    "fsq": "finite scalar quantization on the FSQ level grid nearest K",
    "lfq": "lookup-free (sign) quantization, log2 K channels, entropy penalty",
    "rvq2": "2 residual stages of EMA codes with restart, sqrt(K) codes each",
    "rvq4": "4 residual stages of EMA codes with restart, K^(1/4) codes each",
}


def arm_settings(arm: str, vocabulary: int) -> dict[str, Any] | None:
    """The ``config.quantizer`` knobs that make ``arm`` (ARMS) at about ``vocabulary``
    codes, or None where it has none (no FSQ grid; bits that are not whole or do not split
    over the stages)."""
    if arm not in ARMS:
        raise ValueError(f"quantizer arm {arm!r}: choose from {', '.join(ARMS)}")
    bits = math.log2(vocabulary)
    whole = int(bits) == bits
    if arm in ("ema", "ema_restart", "rvq2", "rvq4"):
        knobs = {"kind": "ema", "num_codes": vocabulary,
                 "dead_code_threshold": 0.0 if arm == "ema" else 1.0}
    else:
        knobs = {"kind": arm, "num_codes": vocabulary, "dead_code_threshold": 0.0,
                 "kmeans_init": False}
    if arm == "fsq":
        if not whole or int(bits) not in FSQ_LEVELS:
            return None
        knobs["levels"] = fsq_levels(vocabulary)
        knobs["num_codes"] = math.prod(knobs["levels"])
    if arm == "lfq" and not whole:
        return None
    if arm.startswith("rvq"):
        stages = int(arm[3:])
        if not whole or int(bits) % stages:
            return None
        knobs.update(stages=stages, num_codes=2 ** (int(bits) // stages))
    return knobs


@flax.struct.dataclass
class QuantizerOutput:
    """A quantizer call's result (a pytree, so it can leave a jitted function)."""

    quantized: jax.Array  # (..., code_dim) straight-through codes (gumbel train: soft mix)
    indices: jax.Array  # (...) int32 token ids; (..., stages) with residual stages
    losses: dict[str, jax.Array]  # weighted training terms and their sum, "total"
    q_loss: jax.Array  # the paper's (1 + beta) * mean((z - e)^2), reported only (``q_loss``)
    health: dict[str, jax.Array]  # unique_fraction, perplexity, dead_fraction (+ per stage)


def gumbel_temperature(start: float = 1.0, end: float = 1 / 16,
                       anneal_steps: int = 100_000) -> optax.Schedule:
    """Gumbel-softmax temperature by step: exponential decay from ``start`` to ``end``
    over ``anneal_steps`` steps, then held at ``end``."""
    return optax.exponential_decay(start, anneal_steps, end / start, end_value=end)


def q_loss(z: jax.Array, e: jax.Array, beta: float) -> jax.Array:
    """The paper's quantizer loss, (1 + beta) * mean((z - e)^2) between latents z and the
    codes e the decoder receives, as a report: no gradient flows through it."""
    return lax.stop_gradient((1.0 + beta) * jnp.mean(jnp.square(z - e)))


def fsq_levels(num_codes: int) -> tuple[int, ...]:
    """FSQ levels for a vocabulary of about ``num_codes`` (a power of two in FSQ_LEVELS)."""
    bits = round(math.log2(num_codes))
    if 2**bits != num_codes or bits not in FSQ_LEVELS:
        raise ValueError(f"no FSQ level grid for {num_codes} codes; grids exist for "
                         f"{', '.join(f'2^{b}' for b in FSQ_LEVELS)}")
    return FSQ_LEVELS[bits]


def code_width(kind: str, num_codes: int, latent_channels: int,
               levels: Sequence[int] = ()) -> int:
    """Channels of the latent a quantizer of ``kind`` takes (and its codes have)."""
    if kind == "fsq":
        return len(levels)
    if kind == "lfq":
        return round(math.log2(num_codes))
    return latent_channels


def _l2_normalize(x: jax.Array) -> jax.Array:
    return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def _sq_distances(x: jax.Array, codes: jax.Array) -> jax.Array:
    """(N, K) squared distances ||x||^2 - 2 x.e + ||e||^2, in float32."""
    return (jnp.sum(x * x, axis=-1, keepdims=True)
            - 2.0 * jnp.matmul(x, codes.T, precision=_HIGHEST)
            + jnp.sum(codes * codes, axis=-1)[None, :])


def _assign(x: jax.Array, codes: jax.Array) -> jax.Array:
    return jnp.argmin(_sq_distances(x, codes), axis=-1).astype(jnp.int32)


def _kmeans(x: jax.Array, k: int, iters: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means on (N, D) rows, seeded with k random rows; returns (centroids,
    counts). An empty cluster keeps its previous centroid."""
    n = x.shape[0]
    centroids = x[jax.random.choice(key, n, (k,), replace=n < k)]

    def step(c, _):
        onehot = jax.nn.one_hot(_assign(x, c), k, dtype=jnp.float32)
        counts = onehot.sum(0)
        sums = jnp.matmul(onehot.T, x, precision=_HIGHEST)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c), None

    centroids, _ = lax.scan(step, centroids, None, length=iters)
    counts = jnp.bincount(_assign(x, centroids), length=k).astype(jnp.float32)
    return centroids, counts


def _entropy(p: jax.Array, axis: int = -1) -> jax.Array:
    """Shannon entropy in nats of probabilities ``p`` along ``axis`` (0 log 0 = 0)."""
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=axis)


def _health(counts: jax.Array, usage: jax.Array, dead_floor: float) -> dict[str, jax.Array]:
    p = counts / jnp.maximum(counts.sum(), 1.0)
    return {"unique_fraction": jnp.mean((counts > 0).astype(jnp.float32)),
            "perplexity": jnp.exp(_entropy(p)),
            "dead_fraction": jnp.mean((usage < dead_floor).astype(jnp.float32))}


class _Quantizer(nn.Module):
    """What every kind shares: the usage statistic, codebook health and the output.

    A kind implements ``_codes_of(x, update, temperature, step) -> (x_st, e, idx, losses)``
    on float32 rows x (N, D): ``e`` what the decoder receives, ``x_st`` the continuous
    value the straight-through estimator passes the gradient through (None: ``e`` is
    differentiable itself, as gumbel's soft mixture); and ``lookup_rows(ids) -> (N, D)``,
    the float32 codes of flat token ids.
    """

    num_codes: int  # K, vocabulary size
    code_dim: int  # D, width of a code and of z
    beta: float = 0.25  # commitment weight
    ema_decay: float = 0.99  # decay of the usage statistic (and of the EMA codebook)
    dtype: Any = None  # dtype of `quantized` / lookups (None: z's); maths is float32

    def _usage(self) -> Any:
        # Usage starts at zero: a code counts as dead until it is used, so the health
        # metric is honest from step one, and with restart the first training steps move
        # the codes that the data do not use onto the data.
        return self.variable("vq_stats", "usage",
                             logical(lambda: jnp.zeros((self.num_codes,), jnp.float32), "codes"))

    def _track(self, x: jax.Array, idx: jax.Array, update: bool) -> dict[str, jax.Array]:
        """Update the EMA usage with this batch's counts; the batch's codebook health
        (in training, dead_fraction after the usage update and before any restart: how
        many codes needed one)."""
        counts = jnp.bincount(idx, length=self.num_codes).astype(jnp.float32)
        usage = self.usage.value
        if update:
            usage = self.ema_decay * usage + (1.0 - self.ema_decay) * counts
        health = _health(counts, usage, self._dead_floor())
        if update:
            self._store_usage(x, usage)
        return health

    def _dead_floor(self) -> float:
        return 1e-3

    def _store_usage(self, x: jax.Array, usage: jax.Array) -> None:
        del x
        self.usage.value = usage

    def _out_dtype(self, z: jax.Array) -> Any:
        return z.dtype if self.dtype is None else self.dtype

    def __call__(self, z: jax.Array, *, train: bool,
                 temperature: float | jax.Array | None = None,
                 step: jax.Array | None = None) -> QuantizerOutput:
        """Quantize z (..., D). Training calls update ``vq_stats`` and, for restart,
        k-means or Gumbel noise, use the ``"vq"`` rng; gumbel training needs
        ``temperature``; lfq anneals its entropy weight by ``step`` when given."""
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"z has {z.shape[-1]} channels, the quantizer {self.code_dim}")
        update = train and not self.is_initializing()
        x = z.reshape(-1, self.code_dim).astype(jnp.float32)
        x_st, e, idx, losses = self._codes_of(x, update, temperature, step)
        losses["total"] = sum(losses.values(), jnp.zeros((), jnp.float32))
        # Straight-through (d q / d x_st = identity) when training; the codes themselves
        # otherwise, so decoding exported token ids reproduces the forward pass exactly.
        q = e if x_st is None or not train else x_st + lax.stop_gradient(e - x_st)
        reported = q_loss(x if x_st is None else x_st, e, self.beta)
        return QuantizerOutput(
            quantized=q.reshape(*z.shape[:-1], q.shape[-1]).astype(self._out_dtype(z)),
            indices=idx.reshape(z.shape[:-1]), losses=losses, q_loss=reported,
            health=self._track(x, idx, update))

    def lookup(self, indices: jax.Array) -> jax.Array:
        """Code vectors (..., D) of token ids (...), e.g. to decode a token grid."""
        rows = self.lookup_rows(indices.reshape(-1))
        return rows.reshape(*indices.shape, self.code_dim).astype(
            jnp.float32 if self.dtype is None else self.dtype)

    def table(self) -> jax.Array:
        """(K, D) float32: every token id's code, as the decoder's input receives it."""
        return self.lookup_rows(jnp.arange(self.num_codes, dtype=jnp.int32))


class VectorQuantizer(_Quantizer):
    """Quantizes z (..., D) to the nearest of ``num_codes`` codes (kinds ema, learned,
    simvq; gumbel picks by a projection); see the module docstring.

    State: kind "ema" keeps ``vq_stats/{embedding, cluster_size, embed_sum, usage}`` (plus
    ``initialized`` with ``kmeans_init``); "learned" and "gumbel" keep
    ``params/embedding`` and ``vq_stats/usage`` (gumbel also ``params/to_logits``);
    "simvq" keeps ``params/{basis, projection}`` (the basis is never trained) and
    ``vq_stats/usage``.
    """

    kind: str = "ema"  # "ema" | "learned" | "gumbel" | "simvq"
    ema_epsilon: float = 1e-5  # Laplace smoothing of EMA cluster sizes
    l2_normalize: bool = False  # compare and look up l2-normalised z and codes
    kmeans_init: bool = False  # ema: k-means on the first training batch
    kmeans_iters: int = 10  # Lloyd iterations of that k-means
    dead_code_threshold: float = 0.0  # ema: restart codes whose EMA usage falls below this
    kl_weight: float = 1.0  # gumbel: weight of KL(q || uniform)

    def setup(self):
        k, d = self.num_codes, self.code_dim
        if self.kind not in TABLE_KINDS:
            raise ValueError(f"kind must be one of {TABLE_KINDS}, got {self.kind!r}")
        # Parameters cannot change inside `apply`, so data-driven codebook edits need the
        # EMA codebook, which lives in a mutable collection.
        if self.kind != "ema" and self.dead_code_threshold > 0:
            raise ValueError(f"dead-code restart needs kind='ema' (kind={self.kind!r} keeps "
                             "its codebook in params, which apply cannot rewrite)")
        if self.kind != "ema" and self.kmeans_init:
            raise ValueError(f"kmeans_init needs kind='ema' (kind={self.kind!r} keeps its "
                             "codebook in params, which apply cannot rewrite)")

        def uniform(key):  # the reference's init: U(-1/K, 1/K)
            return jax.random.uniform(key, (k, d), jnp.float32, -1.0 / k, 1.0 / k)

        codes = lambda init: logical(init, "codes", "code_dim")  # (K, D) tables
        per_code = lambda init: logical(init, "codes")  # (K,) statistics
        if self.kind == "ema":
            self.codebook = self.variable("vq_stats", "embedding",
                                          codes(lambda: uniform(self.make_rng("params"))))
            # One pseudo-observation per code, at the code: consistent with the codebook
            # and light enough that the first real batches move it quickly.
            self.cluster_size = self.variable("vq_stats", "cluster_size",
                                              per_code(lambda: jnp.ones((k,), jnp.float32)))
            self.embed_sum = self.variable("vq_stats", "embed_sum",
                                           codes(lambda: self.codebook.value))
        elif self.kind == "simvq":
            # SimVQ's basis: N(0, 1/D) rows, frozen (its gradient is stopped, so Adam
            # leaves it where it started); the map W starts at the identity, so the
            # first codes are the basis itself.
            self.basis = self.param("basis", codes(
                lambda key: jax.random.normal(key, (k, d), jnp.float32) / math.sqrt(d)))
            self.projection = self.param("projection", logical(
                lambda key: jnp.eye(d, dtype=jnp.float32), "code_dim", "code_dim"))
        else:
            self.codebook = self.param("embedding", codes(uniform))
        if self.kind == "gumbel":
            self.to_logits = nn.Dense(
                k, dtype=jnp.float32, param_dtype=jnp.float32,
                kernel_init=logical(nn.initializers.lecun_normal(), "code_dim", "codes"),
                bias_init=per_code(nn.initializers.zeros))
        self.usage = self._usage()
        if self.kmeans_init:
            self.initialized = self.variable("vq_stats", "initialized",
                                             lambda: jnp.array(False))

    def _codes(self) -> jax.Array:
        """The (K, D) float32 codebook as used for distances and lookups."""
        if self.kind == "simvq":
            codes = jnp.matmul(lax.stop_gradient(self.basis), self.projection,
                               precision=_HIGHEST)
        else:
            codes = self.codebook.value if self.kind == "ema" else self.codebook
        codes = codes.astype(jnp.float32)
        return _l2_normalize(codes) if self.l2_normalize else codes

    def lookup_rows(self, indices: jax.Array) -> jax.Array:
        return jnp.take(self._codes(), indices, axis=0)

    def _codes_of(self, x, update, temperature, step):
        del step
        if self.kind == "gumbel":
            # Gumbel has no commitment term: nothing pulls z towards the codes, which are
            # chosen by a projection of z. Its q_loss is the distance between the latent
            # and what the decoder receives instead (the hard code at evaluation, the soft
            # mixture in training): the same measurement as for the VQ kinds, not a
            # quantity this kind minimises.
            e, idx, losses = self._gumbel(x, update, temperature)
            return None, e, idx, losses
        if self.l2_normalize:
            x = _l2_normalize(x)
        if update and self.kmeans_init:
            self._maybe_kmeans_init(x)
        codes = self._codes()
        idx = _assign(x, codes)
        e = jnp.take(codes, idx, axis=0)
        losses = {"commitment": self.beta * jnp.mean(jnp.square(x - lax.stop_gradient(e)))}
        if self.kind in ("learned", "simvq"):
            losses["codebook"] = jnp.mean(jnp.square(lax.stop_gradient(x) - e))
        if update and self.kind == "ema":
            self._ema_update(x, idx)
        return x, e, idx, losses

    def _gumbel(self, x: jax.Array, stochastic: bool, temperature
                ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        """Soft (training) or hard (eval) codes from the 1x1 logit projection."""
        k = self.num_codes
        logits = self.to_logits(x)
        codes = self._codes()
        if stochastic:
            if temperature is None:
                raise ValueError("a gumbel training call needs a temperature")
            noisy = logits + jax.random.gumbel(self.make_rng("vq"), logits.shape, jnp.float32)
            soft = jax.nn.softmax(noisy / temperature, axis=-1)
            idx = jnp.argmax(noisy, axis=-1).astype(jnp.int32)
            e = jnp.matmul(soft, codes, precision=_HIGHEST)
        else:
            idx = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            e = jnp.take(codes, idx, axis=0)
        log_q = jax.nn.log_softmax(logits, axis=-1)
        kl = jnp.mean(jnp.sum(jnp.exp(log_q) * (log_q + jnp.log(float(k))), axis=-1))
        return e, idx, {"commitment": jnp.zeros((), jnp.float32), "kl": self.kl_weight * kl}

    def _maybe_kmeans_init(self, x: jax.Array) -> None:
        """Replace the EMA state by k-means of this batch, once (jit-safe via lax.cond)."""
        key = self.make_rng("vq")

        def fresh():
            centroids, counts = _kmeans(x, self.num_codes, self.kmeans_iters, key)
            size = jnp.maximum(counts, 1.0)  # as if the EMA had seen such batches before
            return centroids, size, centroids * size[:, None], counts

        current = (self.codebook.value, self.cluster_size.value, self.embed_sum.value,
                   self.usage.value)
        new = lax.cond(self.initialized.value, lambda: current, fresh)
        (self.codebook.value, self.cluster_size.value, self.embed_sum.value,
         self.usage.value) = new
        self.initialized.value = jnp.array(True)

    def _ema_update(self, x: jax.Array, idx: jax.Array) -> None:
        """EMA of cluster sizes and sums; codes = sums / Laplace-smoothed sizes."""
        d, k, eps = self.ema_decay, self.num_codes, self.ema_epsilon
        onehot = jax.nn.one_hot(idx, k, dtype=jnp.float32)
        counts = onehot.sum(0)
        sums = jnp.matmul(onehot.T, x, precision=_HIGHEST)
        size = d * self.cluster_size.value + (1.0 - d) * counts
        embed_sum = d * self.embed_sum.value + (1.0 - d) * sums
        total = size.sum()
        smoothed = (size + eps) / (total + k * eps) * total  # no division by ~0 for idle codes
        self.cluster_size.value = size
        self.embed_sum.value = embed_sum
        self.codebook.value = embed_sum / smoothed[:, None]

    def _dead_floor(self) -> float:
        return max(self.dead_code_threshold, 1e-3)

    def _store_usage(self, x: jax.Array, usage: jax.Array) -> None:
        if self.kind == "ema" and self.dead_code_threshold > 0:
            self._restart_dead(x, usage)
        else:
            self.usage.value = usage

    def _restart_dead(self, x: jax.Array, usage: jax.Array) -> None:
        """Move codes with usage < threshold onto random encoder outputs of this batch.

        Their statistics restart at twice the threshold (count) and the new vector times
        it (sum), so an idle restarted code survives ~ln 2 / (1 - decay) steps before it
        is restarted again, and a used one is pulled towards its data at once.
        """
        if self.l2_normalize:
            x = _l2_normalize(x)
        dead = usage < self.dead_code_threshold
        pick = jax.random.randint(self.make_rng("vq"), (self.num_codes,), 0, x.shape[0])
        fresh = jnp.take(x, pick, axis=0)
        count = 2.0 * self.dead_code_threshold
        self.codebook.value = jnp.where(dead[:, None], fresh, self.codebook.value)
        self.embed_sum.value = jnp.where(dead[:, None], fresh * count, self.embed_sum.value)
        self.cluster_size.value = jnp.where(dead, count, self.cluster_size.value)
        self.usage.value = jnp.where(dead, count, usage)


class FiniteScalarQuantizer(_Quantizer):
    """FSQ: channel i of z is bounded to (-L_i/2, L_i/2) by a shifted tanh, rounded to
    one of L_i integers and scaled to [-1, 1]; the index is the mixed-radix number of the
    rounded channels (channel 0 the least significant digit). The straight-through
    gradient passes the rounding only, so d out / d z is the bound's derivative.

    State: ``vq_stats/usage`` only."""

    levels: tuple[int, ...] = (8, 5, 5, 5)  # values per channel; K = prod(levels)

    def setup(self):
        if len(self.levels) != self.code_dim or int(np.prod(self.levels)) != self.num_codes:
            raise ValueError(f"fsq levels {tuple(self.levels)} give {len(self.levels)} "
                             f"channels and {int(np.prod(self.levels))} codes; the quantizer "
                             f"has {self.code_dim} channels and {self.num_codes} codes")
        if min(self.levels) < 2:
            raise ValueError(f"fsq levels must be >= 2, got {tuple(self.levels)}")
        self.usage = self._usage()

    def _constants(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        levels = np.asarray(self.levels, np.float64)
        half_width = np.floor(levels / 2)  # rounded values span [-half_width, L - 1 - half_width]
        radix = np.concatenate([[1], np.cumprod(self.levels)[:-1]])
        return levels, half_width, radix

    def bound(self, x: jax.Array) -> jax.Array:
        """The continuous value that is rounded, in units of code steps."""
        levels, _, _ = self._constants()
        half = (levels - 1) * (1 + 1e-3) / 2  # a hair over (L-1)/2, so the ends are reached
        offset = np.where(levels % 2 == 0, 0.5, 0.0)  # even L: the grid sits half a step off 0
        shift = np.arctanh(offset / half)  # so that bound(0) = 0
        return (jnp.tanh(x + shift.astype(np.float32)) * half.astype(np.float32)
                - offset.astype(np.float32))

    def _codes_of(self, x, update, temperature, step):
        del update, temperature, step
        _, half_width, radix = self._constants()
        bounded = self.bound(x)
        rounded = jnp.round(bounded)
        digits = (rounded + half_width.astype(np.float32)).astype(jnp.int32)
        idx = jnp.sum(digits * radix.astype(np.int32), axis=-1).astype(jnp.int32)
        scale = half_width.astype(np.float32)
        return bounded / scale, rounded / scale, idx, {}

    def lookup_rows(self, indices: jax.Array) -> jax.Array:
        levels, half_width, radix = self._constants()
        digits = (indices[:, None] // radix.astype(np.int32)) % levels.astype(np.int32)
        return ((digits - half_width.astype(np.int32)).astype(jnp.float32)
                / half_width.astype(np.float32))


def lfq_entropies(x: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
    """MAGVIT-v2's two entropies of the soft assignment q(c | x) ~ exp(-||x - c||^2 / T)
    over the 2^b codes c in {-1, 1}^b, for rows x (N, b): the mean per-sample entropy
    E[H(q)] and the entropy of the batch's mean assignment H(E[q]), in nats.

    q factorises over channels: channel i is +1 with probability sigmoid(4 x_i / T). So
    E[H(q)] is a sum of per-channel entropies, and E[q] over all 2^b codes is the outer
    product of two halves' assignments averaged over the batch, one (2^a, 2^(b-a))
    matmul, exact at any b (no table of 2^b rows per sample)."""
    x = x.astype(jnp.float32)
    logit = 4.0 * x / temperature
    log_on, log_off = jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit)
    on = jnp.exp(log_on)
    per_channel = -(on * log_on + (1.0 - on) * log_off)
    sample = jnp.mean(jnp.sum(per_channel, axis=-1))

    def half(lo: int, hi: int) -> jax.Array:
        # (N, 2^(hi-lo)): the probability of each sign pattern of channels lo..hi-1.
        bits = ((np.arange(2 ** (hi - lo))[:, None] >> np.arange(hi - lo)) & 1).astype(np.float32)
        log_p = (jnp.matmul(log_on[:, lo:hi], bits.T, precision=_HIGHEST)
                 + jnp.matmul(log_off[:, lo:hi], 1.0 - bits.T, precision=_HIGHEST))
        return jnp.exp(log_p)

    b = x.shape[-1]
    a = b // 2
    mean = jnp.matmul(half(0, a).T, half(a, b), precision=_HIGHEST) / x.shape[0]
    return sample, _entropy(mean.reshape(-1))


class LookupFreeQuantizer(_Quantizer):
    """LFQ: each of log2(K) channels is quantized to its sign (+-1; 0 counts as -1) and
    the index is sum_i [z_i > 0] 2^i. Losses: commitment (beta, as VQ) and MAGVIT-v2's
    entropy penalty, ``entropy_weight * (E[H(q)] - diversity * H(E[q]))``
    (``lfq_entropies``), whose weight starts ``entropy_anneal_factor`` times larger and
    falls linearly to ``entropy_weight`` over ``entropy_anneal_steps`` training steps.

    State: ``vq_stats/usage`` only."""

    entropy_weight: float = 0.1  # weight of the entropy penalty (MAGVIT-v2: 0.1)
    entropy_temperature: float = 0.01  # T of the soft assignment (MAGVIT-v2: 0.01)
    entropy_diversity: float = 1.0  # weight of the batch entropy inside the penalty
    entropy_anneal_factor: float = 3.0  # the penalty's weight at step 0, in entropy_weights
    entropy_anneal_steps: int = 2000  # steps over which it falls to entropy_weight

    def setup(self):
        if 2**self.code_dim != self.num_codes:
            raise ValueError(f"lfq needs num_codes = 2^channels; got {self.num_codes} codes "
                             f"and {self.code_dim} channels")
        self.usage = self._usage()

    def entropy_scale(self, step: jax.Array | None) -> jax.Array:
        """The annealed entropy weight at ``step`` (``entropy_weight`` without a step)."""
        if step is None or self.entropy_anneal_steps <= 0:
            return jnp.asarray(self.entropy_weight, jnp.float32)
        left = jnp.clip(1.0 - step / self.entropy_anneal_steps, 0.0, 1.0)
        return self.entropy_weight * (1.0 + (self.entropy_anneal_factor - 1.0) * left)

    def _codes_of(self, x, update, temperature, step):
        del update, temperature
        on = x > 0
        e = jnp.where(on, 1.0, -1.0)
        idx = jnp.sum(on.astype(jnp.int32) << jnp.arange(self.code_dim, dtype=jnp.int32),
                      axis=-1).astype(jnp.int32)
        sample, batch = lfq_entropies(x, self.entropy_temperature)
        losses = {"commitment": self.beta * jnp.mean(jnp.square(x - e)),
                  "entropy": self.entropy_scale(step) * (sample - self.entropy_diversity * batch)}
        return x, e, idx, losses

    def lookup_rows(self, indices: jax.Array) -> jax.Array:
        bits = (indices[:, None] >> jnp.arange(self.code_dim, dtype=jnp.int32)) & 1
        return jnp.where(bits == 1, 1.0, -1.0).astype(jnp.float32)


def make_quantizer(kind: str, num_codes: int, code_dim: int, *, stages: int = 1,
                   stage_dropout: float = 0.0, **fields: Any) -> nn.Module:
    """The quantizer of ``kind`` (KINDS), in ``stages`` residual stages when > 1;
    ``fields`` are its knobs (those another kind has are ignored, so one config's
    quantizer section serves every kind)."""
    if kind not in KINDS:
        raise ValueError(f"quantizer kind must be one of {KINDS}, got {kind!r}")
    cls = {"fsq": FiniteScalarQuantizer, "lfq": LookupFreeQuantizer}.get(kind, VectorQuantizer)
    names = set(cls.__dataclass_fields__) - {"parent", "name"}
    knobs = {k: v for k, v in fields.items() if k in names}
    if cls is VectorQuantizer:
        knobs["kind"] = kind
    if "levels" in knobs:
        knobs["levels"] = tuple(knobs["levels"])
    if stages == 1:
        return cls(num_codes, code_dim, **knobs)
    dtype = knobs.pop("dtype", None)  # stages add in float32; the sum takes the dtype
    return ResidualQuantizer(cls, num_codes, code_dim, stages, stage_dropout,
                             tuple(sorted(knobs.items())), dtype)


class ResidualQuantizer(nn.Module):
    """``stages`` quantizers of one kind in sequence, each quantizing what the stages
    before it left (their codes' gradients stopped, so every stage's commitment pulls the
    encoder). The decoder receives the sum of the codes, straight through in training;
    with ``stage_dropout`` p, a training batch keeps only its first n stages (n uniform in
    1..stages) with probability p, so the first stages alone decode too. Token ids have
    a trailing stage axis; losses are summed over stages, health is their mean plus each
    stage's (``stage<i>_<key>``).

    State: each stage's, under ``stages_<i>``."""

    stage_class: type
    num_codes: int
    code_dim: int
    stages: int
    stage_dropout: float = 0.0
    stage_fields: tuple[tuple[str, Any], ...] = ()
    dtype: Any = None  # dtype of `quantized` / lookups (None: z's); the stages' is float32

    def setup(self):
        self.quantizers = [self.stage_class(self.num_codes, self.code_dim,
                                            **dict(self.stage_fields))
                           for _ in range(self.stages)]

    @property
    def beta(self) -> float:
        return dict(self.stage_fields).get("beta", 0.25)

    def __call__(self, z: jax.Array, *, train: bool,
                 temperature: float | jax.Array | None = None,
                 step: jax.Array | None = None) -> QuantizerOutput:
        update = train and not self.is_initializing()
        x = z.reshape(-1, self.code_dim).astype(jnp.float32)
        keep = jnp.ones((self.stages,), jnp.float32)
        if update and self.stage_dropout > 0:
            k_drop, k_count = jax.random.split(self.make_rng("vq"))
            count = jax.random.randint(k_count, (), 1, self.stages + 1)
            count = jnp.where(jax.random.uniform(k_drop) < self.stage_dropout, count, self.stages)
            keep = (jnp.arange(self.stages) < count).astype(jnp.float32)
        total = jnp.zeros_like(x)
        indices, losses, health = [], {}, {}
        for s, stage in enumerate(self.quantizers):
            out = stage(x - total, train=train, temperature=temperature, step=step)
            total = total + keep[s] * lax.stop_gradient(out.quantized)
            indices.append(out.indices)
            for k, v in out.losses.items():
                losses[k] = losses.get(k, jnp.zeros((), jnp.float32)) + keep[s] * v
            health.update({f"stage{s}_{k}": v for k, v in out.health.items()})
        for k in ("unique_fraction", "perplexity", "dead_fraction"):
            health[k] = jnp.mean(jnp.stack([health[f"stage{s}_{k}"] for s in range(self.stages)]))
        q = x + lax.stop_gradient(total - x) if train else total
        return QuantizerOutput(
            quantized=q.reshape(z.shape).astype(z.dtype if self.dtype is None else self.dtype),
            indices=jnp.stack(indices, axis=-1).reshape(*z.shape[:-1], self.stages),
            losses=losses, q_loss=q_loss(x, total, self.beta), health=health)

    def lookup(self, indices: jax.Array) -> jax.Array:
        """Codes (..., D) of token ids (..., stages): the sum of the stages' codes."""
        codes = sum(stage.lookup(indices[..., s]) for s, stage in enumerate(self.quantizers))
        return codes.astype(jnp.float32 if self.dtype is None else self.dtype)

    def table(self) -> jax.Array:
        """(stages, K, D) float32: each stage's codes."""
        return jnp.stack([stage.table() for stage in self.quantizers])
