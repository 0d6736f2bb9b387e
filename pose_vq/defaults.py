"""Every knob of pose_vq with its default (the reference's 3D F8 1024-code model).

The experiment files in the repository's ``configs/`` folder start from ``get_config()``
or ``paper_config()`` and override; ``pose_vq.config.validate`` checks the result.
"""

import ml_collections

from pose_vq import runtime
from pose_vq.models import quantizer

# Compression factor -> down-samplings in space (and time) of the paper's models.
COMPRESSION = {"f8": 3, "f16": 4, "f32": 5}


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # PRNG seed for initialisation, dropout and the codebook's random choices
    c.compilation_cache_dir = runtime.DEFAULT_COMPILATION_CACHE  # JAX's persistent cache of compiled
    #                    programs, so restarts and resumes skip compiling ("": off)
    c.cpu_devices = 0  # CPU-only hosts: split the host into N JAX devices that run the batch
    #                    data-parallel over the cores (0: JAX's default, one device)

    c.data = d = ml_collections.ConfigDict()
    d.mode = "3d"  # c2d | m2d | 3d | m2d_3d (pose_vq.data.modes)
    d.frames = 64  # clip length T
    d.heatmap_size = 128  # clip height = width
    d.tfds_name = "panoptic_heatmaps"  # TFDS dataset; config <mode>[_t<T>_s<size>_<knob><value>...]
    d.data_dir = "~/tensorflow_datasets"  # TFDS data dir ("": <workdir>/tensorflow_datasets)
    d.stride = 0  # frames between clip starts when building (0: the builder's default, 90)
    d.score_source = "gaussian"  # joint scores: gaussian (the reference's) | ones | confidence
    d.sigma = 0.75  # Gaussian width of rendered joints and limbs, in heatmap pixels
    d.kind = "limb"  # limb | keypoint heatmaps (keypoint: 2D modes; evaluation adds kp_error)
    d.joint_req = 0.9  # a camera sees a body when more than this fraction of its joints is
    #                    present and in the image (real Panoptic frames often miss a joint or two)
    d.manual_dir = ""  # Panoptic root to build the dataset from when it is missing
    d.synthetic = False  # no dataset and no manual_dir: write a synthetic root and build it
    d.synthetic_sequences = 8  # ... sequences (the last quarter for validation)
    d.synthetic_frames = 300  # ... frames per sequence
    d.synthetic_people = 2  # ... people per sequence
    d.synthetic_seed = 0  # ... the seed it is drawn from (non-zero: in the root's folder and
    #                       the dataset's name, _seed<k>, so roots of two seeds never mix)
    d.synthetic_balanced_kinds = False  # ... motion kinds dealt per split in shuffled rounds,
    #                       so a split of >= 7 bodies has every kind (off: each body draws
    #                       its own; on: _balanced in the folder and the name)
    d.worker_count = 0  # grain worker processes for the training loader
    d.prefetch = 2  # training batches copied to the devices ahead of the step
    d.read_ahead = 4  # batches of stored clips grain's threads read ahead (BENCHMARKS.md)

    c.model = m = ml_collections.ConfigDict()
    m.channels = (64, 64, 128, 128, 256)  # width of each level (reference intermediate_channels)
    m.latent_channels = 256  # channels of the latent grid and the codes
    m.encoder_blocks = 2  # ResBlocks per encoder level
    m.decoder_blocks = 3  # ResBlocks per decoder level
    m.attention_resolutions = (16,)  # spatial sides at which levels get non-local attention
    m.spatial_downsamples = 3  # F8 / F16 / F32 = 3 / 4 / 5 halvings of height and width
    m.temporal_downsamples = 3  # halvings of the frame count (<= spatial_downsamples)
    m.reduce_temporal = False  # reference trick for 48-frame F8 clips: time strided 4, 4, 4
    m.dropout = 0.0  # dropout inside ResBlocks
    m.norm_groups = 32  # GroupNorm groups (every width must be a multiple)
    m.dtype = "float32"  # activation dtype (bfloat16 on accelerators); params stay float32
    m.conv_impl = "auto"  # auto (winograd on CPU, native elsewhere) | native | folded | winograd
    m.remat_levels = 0  # recompute the N highest-resolution levels at each end in the backward
    #                     pass instead of keeping their activations (memory for time)

    c.quantizer = q = ml_collections.ConfigDict()
    q.kind = "ema"  # ema | learned (the paper's) | gumbel (dVAE baseline) | simvq | fsq | lfq
    q.num_codes = 1024  # vocabulary size (fsq: the product of levels; lfq: a power of two)
    q.levels = ()  # fsq: values per channel, e.g. (8, 5, 5, 5) for 1000 codes
    #                (pose_vq.models.quantizer.FSQ_LEVELS: a grid per power of two)
    q.stages = 1  # residual stages, each quantizing what the previous left (token ids gain
    #               a trailing stage axis when > 1)
    q.stage_dropout = 0.0  # residual: probability that a training batch keeps only its first
    #                        n stages (n uniform in 1..stages)
    q.beta = 0.25  # commitment weight on the encoder term
    q.ema_decay = 0.99  # EMA decay of cluster sizes and sums (kind ema)
    q.ema_epsilon = 1e-5  # Laplace smoothing of cluster sizes (kind ema)
    q.l2_normalize = False  # compare l2-normalised latents and codes
    q.kmeans_init = False  # initialise the codebook by k-means on the first batch
    q.dead_code_threshold = 0.0  # restart codes whose EMA usage falls below this (0: off)
    q.kl_weight = 1.0  # weight of the KL to the uniform prior (kind gumbel)
    q.entropy_weight = 0.1  # lfq: weight of MAGVIT-v2's entropy penalty
    q.entropy_temperature = 0.01  # lfq: temperature of the soft assignment it is taken on
    q.entropy_diversity = 1.0  # lfq: weight of the batch entropy inside it
    q.entropy_anneal_factor = 3.0  # lfq: the penalty starts this many times heavier ...
    q.entropy_anneal_steps = 2000  # ... and falls linearly to entropy_weight over these steps
    q.temperature_start = 1.0  # Gumbel-softmax temperature at step 0 (kind gumbel)
    q.temperature_end = 1.0 / 16  # ... annealed exponentially to this
    q.temperature_anneal_steps = 100_000  # ... over this many steps

    c.discriminator = ds = ml_collections.ConfigDict()
    ds.filters = 64  # filters of the first layer
    ds.num_layers = 3  # strided layers
    ds.norm_groups = 32  # GroupNorm groups (per-example: batch- and device-independent)

    c.loss = lo = ml_collections.ConfigDict()
    lo.l1_weight = 1.0  # reconstruction (rec_loss_factor)
    lo.gradient_weight = 0.0  # L1 of the height and width differences (sharp edges; 0: off)
    lo.foreground_weight = 0.0  # L1 weighted by the target's intensity (the limbs; 0: off)
    lo.perceptual_weight = 1.0  # LPIPS-VGG per frame and channel (perceptual_loss_factor)
    lo.adversarial_weight = 1.0  # generator GAN term and discriminator loss (disc_factor)
    lo.disc_start = 2000  # step at which the adversarial terms switch on
    lo.adaptive_weight = True  # scale the GAN term by the gradient-norm ratio on the last layer
    lo.adaptive_weight_max = 1e4  # clip of that ratio
    lo.adaptive_weight_scale = 0.8  # the reference's extra factor on the ratio
    lo.lecam_weight = 0.0  # LeCam regulariser on discriminator logits (0: off)
    lo.lecam_decay = 0.999  # EMA decay of the LeCam anchors
    lo.r1_weight = 0.0  # R1 gradient penalty on real clips (0: off)
    lo.perceptual_planes = 0  # LPIPS on this many random (frame, channel) planes per step, drawn
    # evenly from the clips (rounded up to a whole number per clip; 0: all planes)
    lo.perceptual_chunk = 0  # planes per LPIPS pass and device, recomputed in the backward (0: all)

    c.optimizer = o = ml_collections.ConfigDict()
    o.learning_rate = 2.25e-5  # Adam, generator and discriminator
    o.b1 = 0.5
    o.b2 = 0.9
    o.schedule = "constant"  # generator rate: constant | cosine (linear warm-up, then cosine
    #                          decay to final_factor x the rate at num_steps; the
    #                          discriminator, which starts late, keeps the constant rate)
    o.warmup_steps = 0  # cosine: steps of linear warm-up from 0
    o.final_factor = 0.0  # cosine: the rate at the last step, as a share of learning_rate

    c.train = t = ml_collections.ConfigDict()
    t.batch_size = 8  # global batch, split over all devices (the reference trained at 1)
    t.num_steps = 100_000  # optimiser steps
    t.ema_decay = 0.999  # EMA of the generator weights used for evaluation and export
    t.log_every = 50  # steps between scalar summaries
    t.checkpoint_every = 1000  # steps between checkpoints (and one at the end)
    t.keep_checkpoints = 3  # checkpoints kept in <workdir>/checkpoints
    t.eval_every = 5000  # steps between evaluations (0: only at the end)

    c.sharding = sh = ml_collections.ConfigDict()  # pose_vq.sharding
    sh.strategy = "replicated"  # replicated | fsdp | tensor: the rules below when they are empty
    sh.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})  # devices per mesh axis
    #         (-1: the rest); the batch is split over data
    sh.rules = ()  # ((logical axis, "data" | "model"), ...) overriding the strategy's

    c.eval = e = ml_collections.ConfigDict()
    e.split = "validation"  # split evaluated during training and by --mode=evaluate
    e.batch_size = 8  # global batch (the last one is padded and masked)
    e.max_examples = 0  # evaluate only the first N clips of the split (0: all)
    e.num_videos = 2  # clips written as ground truth | reconstruction | error GIFs
    return c


# Each paper model's quantizer, an arm of ``pose_vq.models.quantizer.ARMS`` at its
# vocabulary, chosen by the demo-scale sweep (README "Which quantizer"; docs/quantizer_sweep,
# held-out PSNR, EMA weights, 400 steps, seed 0). ``:paper`` gives the paper's own instead
# (``ema``: restart off).
PAPER_QUANTIZERS = {
    # FSQ (8,5,5,5), 1000 codes: 23.20 dB; simvq 23.05, ema_restart 22.04, rvq2 22.70,
    # ema 21.80 (the paper's), lfq 19.95. Over 2 seeds fsq 23.26, ema_restart 22.33.
    ("3d", 1024): "fsq",
    # ema_restart: 21.59 dB; ema 20.33, simvq 18.93, fsq 17.65, rvq2 17.20, lfq 16.14
    # (FSQ and SimVQ, 99 and 32 codes' perplexity against 381, blur the third camera).
    ("m2d", 1024): "ema_restart",
    # Not swept: its encoder quantizes three camera views, as m2d's does.
    ("m2d_3d", 1024): "ema_restart",
    # Not swept; m2d at 128 codes, the nearest point: simvq 19.60 dB; fsq 18.36,
    # ema_restart 17.16, ema 17.04, lfq 16.20.
    ("c2d", 128): "simvq",
}


def paper_config(mode: str, num_codes: int, arg: str | None = None, *, frames: int = 64,
                 temporal_offset: int = 0, adversarial_weight: float = 1.0,
                 disc_start: int = 2000) -> ml_collections.ConfigDict:
    """The defaults for one of the paper's models: ``mode`` with about ``num_codes`` codes
    of its quantizer (PAPER_QUANTIZERS), time halved ``temporal_offset`` fewer times than
    space. ``arg`` (a config file's ``:ARG``) names the compression (f8, f16 or f32;
    default f8) and/or ``paper``, the paper's quantizer (an EMA codebook of ``num_codes``
    codes without restart: the reference's model, its checkpoints and timings), comma
    separated: ``f16,paper``."""
    parts = [p for p in (arg or "").lower().split(",") if p]
    unknown = [p for p in parts if p not in COMPRESSION and p != "paper"]
    compressions = [p for p in parts if p in COMPRESSION]
    if unknown:
        raise ValueError(f"config argument {arg!r}: {unknown[0]!r} is neither a compression "
                         f"({', '.join(COMPRESSION)}) nor 'paper'")
    if len(compressions) > 1:
        raise ValueError(f"config argument {arg!r}: one compression at most")
    compression = compressions[0] if compressions else "f8"
    c = get_config()
    c.data.mode = mode
    c.data.frames = frames
    arm = "ema" if "paper" in parts else PAPER_QUANTIZERS.get((mode, num_codes), "ema")
    c.quantizer.update(quantizer.arm_settings(arm, num_codes))
    c.model.spatial_downsamples = COMPRESSION[compression]
    c.model.temporal_downsamples = COMPRESSION[compression] - temporal_offset
    c.loss.adversarial_weight = adversarial_weight
    c.loss.disc_start = disc_start
    return c
