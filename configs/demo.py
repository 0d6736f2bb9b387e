"""The built-in demo: a CPU-sized 3d model (16 frames of 32x32, 8 x 16 x 16 tokens of 256
codes) trained on a synthetic Panoptic root that it writes and builds into the workdir on
first use.

    python -m pose_vq.main --config=configs/demo.py --workdir=runs/demo

Arguments, joined by commas: ``compact``, the earlier demo's 8 x 8 x 8 token grid (a
quarter of the tokens: what the generation and probe measurements in the README ran on);
``vqvae`` or ``dvae``, the paper's baselines at demo scale (pose_vq.config.VARIANTS).
"""

from pose_vq import defaults
from pose_vq.config import VARIANTS, ConfigError, apply_variant, validate


def get_config(arg: str | None = None):
    args = [a for a in (arg or "").split(",") if a]
    c = defaults.get_config()
    c.data.frames = 16
    c.data.heatmap_size = 32
    # Width 16 at full resolution, where limbs are drawn: 8 there (the step's cheapest)
    # ended at 19.3 dB / SSIM 0.656 and merged the legs (README, quick start).
    # Latents at half the side (8 x 16 x 16 = 2048 tokens per clip): at a quarter (8 x 8 x 8,
    # `compact`) the arms merged with the torso, 20.76 dB / SSIM 0.772 against 24.61 / 0.898
    # at 700 steps, 22.35 / 0.828 at the demo's 400 (README, quick start). Four residual
    # stages on the quarter grid, the bits of the half, reached 20.85 dB: the grid's
    # resolution, not its bits, draws the limbs.
    c.model.channels = (16, 32)
    c.model.latent_channels = 32
    c.model.encoder_blocks = 1
    c.model.decoder_blocks = 1
    c.model.attention_resolutions = ()
    c.model.spatial_downsamples = 1
    c.model.temporal_downsamples = 1
    c.model.norm_groups = 8
    c.model.conv_impl = "winograd"  # CPU-sized model: XLA's native 3D conv is slow on CPU
    c.quantizer.num_codes = 256
    c.quantizer.dead_code_threshold = 1.0
    c.discriminator.filters = 16
    c.discriminator.norm_groups = 8
    c.loss.disc_start = 300  # the GAN for the last 100 steps, at a tenth of the weight:
    c.loss.adversarial_weight = 0.1  # at 1.0 it raised training L1 from 0.068 to 0.09
    # No LPIPS: on one plane per step it held training L1 above the all-zeros prediction's
    # through step 150 and made the step 1.6x as long; at weight 0.1, 450 steps ended 2.9 dB
    # above all-zeros. Without it 700 steps reach +8 dB (README, quick start).
    c.loss.perceptual_weight = 0.0
    c.loss.gradient_weight = 1.0  # L1 on the heatmaps' differences: charges blurred limbs
    c.optimizer.learning_rate = 1e-3
    c.data.data_dir = ""  # <workdir>/tensorflow_datasets
    c.data.synthetic = True
    c.data.stride = 8
    c.data.score_source = "ones"  # no per-frame random joint strengths (noise to memorise)
    c.data.sigma = 1.0  # wider limbs than the reference's 0.75 px: held-out L1 0.44x of
    #                     all-zeros after 700 steps, against 0.56x at 0.75 px
    c.cpu_devices = 2  # both cores of a small machine, data-parallel
    c.train.batch_size = 4
    c.train.num_steps = 400  # half-side latents learn faster: training L1 at step 350
    #                          (0.046) was the quarter side's at 700; 700 steps took 11 min
    c.train.log_every = 25
    c.train.checkpoint_every = 200
    c.train.eval_every = 0  # evaluate once, at the end
    c.train.ema_decay = 0.99
    if "compact" in args:  # the demo until 2026-12-07: a quarter of the tokens, 700 steps
        args.remove("compact")
        c.model.update(channels=(16, 32, 64), attention_resolutions=(8,), spatial_downsamples=2)
        c.train.num_steps, c.loss.disc_start = 700, 600
    if len(args) > 1:
        raise ConfigError(f"demo.py:{arg}: at most one of {sorted(VARIANTS)} besides compact")
    return apply_variant(c, args[0]) if args else validate(c)
