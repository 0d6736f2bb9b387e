"""The VQ-GAN's vector quantizer: channels-last latents (..., D) -> K codes.

Three codebooks:

* ``"ema"`` (default): codes are exponential moving averages of the encoder outputs
  assigned to them (van den Oord et al. 2017, appendix; Razavi et al. 2019). No gradient
  reaches the codebook; it lives with its statistics in the mutable ``"vq_stats"``
  collection. Supports k-means initialisation and dead-code restart.
* ``"learned"``: the paper's codebook, a parameter trained by the codebook loss.
* ``"gumbel"``: a dVAE baseline; a 1x1 projection to K logits, Gumbel-softmax in
  training, hard argmax at eval, plus a KL term to the uniform prior.

Losses. The reference weighted the *codebook* term with ``beta`` and left the commitment
term unweighted; here, as in the VQ-VAE paper, ``beta`` weights the commitment term:
``codebook = mean((sg(z) - e)^2)``, ``commitment = beta * mean((z - sg(e))^2)``. Every
entry of ``losses`` is already weighted, so ``losses["total"]`` is their sum: what
training minimises (logged as ``loss_quantizer_*``), which differs by kind (ema: the
commitment alone; gumbel: the KL). ``q_loss`` is the number the paper reports for every
kind, (1 + beta) * mean((z - e)^2) between the latents and the codes the decoder
receives; it is only reported (evaluation, analysis tables, training summaries), never
differentiated.

Multi-device. Every statistic (cluster sizes, code sums, usage, k-means sums) is a plain
sum over all batch positions. Under ``jax.jit`` with the batch sharded along a mesh axis
those sums are global (XLA inserts the all-reduce), so every device computes the same
new codebook; there is no explicit ``psum`` and no ``pmap``. Random choices (restart
vectors, k-means seeds, Gumbel noise) come from the ``"vq"`` rng, which is one logical
key under jit, so they agree across devices too.

State is only updated by training calls outside ``init`` (like Flax's BatchNorm), so an
``init`` on a dummy batch is harmless; training calls pass ``mutable=["vq_stats"]``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax

from pose_vq.sharding import logical

KINDS = ("ema", "learned", "gumbel")
_HIGHEST = lax.Precision.HIGHEST  # f32 matmuls even where the default is bf16 passes (TPU)


@flax.struct.dataclass
class QuantizerOutput:
    """A quantizer call's result (a pytree, so it can leave a jitted function)."""

    quantized: jax.Array  # (..., code_dim) straight-through codes (gumbel train: soft mix)
    indices: jax.Array  # (...) int32 token ids
    losses: dict[str, jax.Array]  # weighted training terms and their sum, "total"
    q_loss: jax.Array  # the paper's (1 + beta) * mean((z - e)^2), reported only (``q_loss``)
    health: dict[str, jax.Array]  # unique_fraction, perplexity, dead_fraction


def gumbel_temperature(start: float = 1.0, end: float = 1 / 16,
                       anneal_steps: int = 100_000) -> optax.Schedule:
    """Gumbel-softmax temperature by step: exponential decay from ``start`` to ``end``
    over ``anneal_steps`` steps, then held at ``end``."""
    return optax.exponential_decay(start, anneal_steps, end / start, end_value=end)


def q_loss(z: jax.Array, e: jax.Array, beta: float) -> jax.Array:
    """The paper's quantizer loss, (1 + beta) * mean((z - e)^2) between latents z and the
    codes e the decoder receives, as a report: no gradient flows through it."""
    return lax.stop_gradient((1.0 + beta) * jnp.mean(jnp.square(z - e)))


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


class VectorQuantizer(nn.Module):
    """Quantizes z (..., D) to the nearest of ``num_codes`` codes; see the module docstring.

    State: kind "ema" keeps ``vq_stats/{embedding, cluster_size, embed_sum, usage}`` (plus
    ``initialized`` with ``kmeans_init``); "learned" and "gumbel" keep
    ``params/embedding`` and ``vq_stats/usage`` (gumbel also ``params/to_logits``).
    """

    num_codes: int  # K, codebook size
    code_dim: int  # D, width of a code and of z
    kind: str = "ema"  # "ema" | "learned" | "gumbel"
    beta: float = 0.25  # commitment weight
    ema_decay: float = 0.99  # decay of the EMA statistics (and of usage, for every kind)
    ema_epsilon: float = 1e-5  # Laplace smoothing of EMA cluster sizes
    l2_normalize: bool = False  # compare and look up l2-normalised z and codes
    kmeans_init: bool = False  # ema: k-means on the first training batch
    kmeans_iters: int = 10  # Lloyd iterations of that k-means
    dead_code_threshold: float = 0.0  # ema: restart codes whose EMA usage falls below this
    kl_weight: float = 1.0  # gumbel: weight of KL(q || uniform)
    dtype: Any = None  # dtype of `quantized` / lookups (None: z's); maths is float32

    def setup(self):
        k, d = self.num_codes, self.code_dim
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
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
        else:
            self.codebook = self.param("embedding", codes(uniform))
        if self.kind == "gumbel":
            self.to_logits = nn.Dense(
                k, dtype=jnp.float32, param_dtype=jnp.float32,
                kernel_init=logical(nn.initializers.lecun_normal(), "code_dim", "codes"),
                bias_init=per_code(nn.initializers.zeros))
        # Usage starts at zero: a code counts as dead until it is used, so the health
        # metric is honest from step one, and with restart the first training steps move
        # the codes that the data do not use onto the data.
        self.usage = self.variable("vq_stats", "usage",
                                   per_code(lambda: jnp.zeros((k,), jnp.float32)))
        if self.kmeans_init:
            self.initialized = self.variable("vq_stats", "initialized",
                                             lambda: jnp.array(False))

    def _codes(self) -> jax.Array:
        """The (K, D) float32 codebook as used for distances and lookups."""
        codes = self.codebook.value if self.kind == "ema" else self.codebook
        codes = codes.astype(jnp.float32)
        return _l2_normalize(codes) if self.l2_normalize else codes

    def lookup(self, indices: jax.Array) -> jax.Array:
        """Code vectors (..., D) of token ids (...), e.g. to decode a token grid."""
        return jnp.take(self._codes(), indices, axis=0).astype(
            jnp.float32 if self.dtype is None else self.dtype)

    def __call__(self, z: jax.Array, *, train: bool,
                 temperature: float | jax.Array | None = None) -> QuantizerOutput:
        """Quantize z (..., D). Training calls update ``vq_stats`` and, for restart,
        k-means or Gumbel noise, use the ``"vq"`` rng; gumbel training needs
        ``temperature``."""
        update = train and not self.is_initializing()
        lead, out_dtype = z.shape[:-1], z.dtype if self.dtype is None else self.dtype
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"z has {z.shape[-1]} channels, codebook {self.code_dim}")
        if self.kind == "gumbel":
            q, idx, losses = self._gumbel(z, update, temperature)
            # Gumbel has no commitment term: nothing pulls z towards the codes, which are
            # chosen by a projection of z. Its q_loss is the distance between the latent
            # and what the decoder receives instead (the hard code at evaluation, the soft
            # mixture in training): the same measurement as for the VQ kinds, not a
            # quantity this kind minimises.
            reported = q_loss(z.reshape(-1, self.code_dim).astype(jnp.float32), q, self.beta)
        else:
            x = z.reshape(-1, self.code_dim).astype(jnp.float32)
            if self.l2_normalize:
                x = _l2_normalize(x)
            if update and self.kmeans_init:
                self._maybe_kmeans_init(x)
            codes = self._codes()
            idx = _assign(x, codes)
            e = jnp.take(codes, idx, axis=0)
            losses = {"commitment": self.beta * jnp.mean(jnp.square(x - lax.stop_gradient(e)))}
            if self.kind == "learned":
                losses["codebook"] = jnp.mean(jnp.square(lax.stop_gradient(x) - e))
            # Straight-through (d q / d x = identity) when training; the codes themselves
            # otherwise, so decoding exported token ids reproduces the forward pass exactly.
            q = x + lax.stop_gradient(e - x) if train else e
            reported = q_loss(x, e, self.beta)  # x, e: l2-normalised with l2_normalize
            if update and self.kind == "ema":
                self._ema_update(x, idx)
        losses["total"] = sum(losses.values())

        counts = jnp.bincount(idx, length=self.num_codes).astype(jnp.float32)
        usage = self.usage.value
        if update:
            d = self.ema_decay
            usage = d * usage + (1.0 - d) * counts
            if self.kind == "ema" and self.dead_code_threshold > 0:
                self._restart_dead(x, usage)
            else:
                self.usage.value = usage
        return QuantizerOutput(
            quantized=q.reshape(*lead, q.shape[-1]).astype(out_dtype),
            indices=idx.reshape(lead),
            losses=losses,
            q_loss=reported,
            health=self._health(counts, usage))

    def _gumbel(self, z: jax.Array, stochastic: bool, temperature
                ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        """Soft (training) or hard (eval) codes from the 1x1 logit projection."""
        k = self.num_codes
        logits = self.to_logits(z.astype(jnp.float32)).reshape(-1, k)
        codes = self._codes()
        if stochastic:
            if temperature is None:
                raise ValueError("a gumbel training call needs a temperature")
            noisy = logits + jax.random.gumbel(self.make_rng("vq"), logits.shape, jnp.float32)
            soft = jax.nn.softmax(noisy / temperature, axis=-1)
            idx = jnp.argmax(noisy, axis=-1).astype(jnp.int32)
            q = jnp.matmul(soft, codes, precision=_HIGHEST)
        else:
            idx = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            q = jnp.take(codes, idx, axis=0)
        log_q = jax.nn.log_softmax(logits, axis=-1)
        kl = jnp.mean(jnp.sum(jnp.exp(log_q) * (log_q + jnp.log(float(k))), axis=-1))
        return q, idx, {"commitment": jnp.zeros((), jnp.float32), "kl": self.kl_weight * kl}

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

    def _restart_dead(self, x: jax.Array, usage: jax.Array) -> None:
        """Move codes with usage < threshold onto random encoder outputs of this batch.

        Their statistics restart at twice the threshold (count) and the new vector times
        it (sum), so an idle restarted code survives ~ln 2 / (1 - decay) steps before it
        is restarted again, and a used one is pulled towards its data at once.
        """
        dead = usage < self.dead_code_threshold
        pick = jax.random.randint(self.make_rng("vq"), (self.num_codes,), 0, x.shape[0])
        fresh = jnp.take(x, pick, axis=0)
        count = 2.0 * self.dead_code_threshold
        self.codebook.value = jnp.where(dead[:, None], fresh, self.codebook.value)
        self.embed_sum.value = jnp.where(dead[:, None], fresh * count, self.embed_sum.value)
        self.cluster_size.value = jnp.where(dead, count, self.cluster_size.value)
        self.usage.value = jnp.where(dead, count, usage)

    def _health(self, counts: jax.Array, usage: jax.Array) -> dict[str, jax.Array]:
        """Codebook health of this batch; in training, dead_fraction is measured after the
        usage update and before any restart (how many codes needed one)."""
        p = counts / jnp.maximum(counts.sum(), 1.0)
        entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
        floor = max(self.dead_code_threshold, 1e-3)
        return {"unique_fraction": jnp.mean((counts > 0).astype(jnp.float32)),
                "perplexity": jnp.exp(entropy),
                "dead_fraction": jnp.mean((usage < floor).astype(jnp.float32))}
