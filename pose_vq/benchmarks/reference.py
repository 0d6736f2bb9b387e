"""``python -m pose_vq.benchmarks.reference``: the reference implementation timed beside
pose_vq, on the same device, in the same run.

    python -m pose_vq.benchmarks.reference --reference=PATH/Pose-Quantization \\
        --config=configs/cpu_targets.py:small --batch_sizes=1,2 [--what=step,encode]

``--reference`` is a user's checkout of the paper's PyTorch code (TeCSAR-UNCC/
Pose-Quantization; nothing of it is copied into pose_vq). Its ``VQGAN`` and
``VQGANTrainer`` are built at the shapes of the pose_vq config (mode, channels, levels,
codes, clip size, batch) and its own ``VQGANTrainer.step`` (generator and discriminator
updates, LPIPS, adaptive weight) and ``VQGAN.encode`` are timed. Each measurement is a
fresh process, pose_vq's and the reference's alternating round by round, so a machine
that drifts slows both alike; the table gives each side's median seconds and the median,
minimum and maximum of the per-round ratios (reference / pose_vq).

Offline, the reference's optional imports (wandb, cv2, imageio, torchsummary, imgaug,
piq, scikit-image, torchvision) are replaced by empty stand-ins when missing (they serve
logging and metrics, not the step), and LPIPS, whose VGG16 trunk torchvision downloads,
by a stand-in of the same layers and cost with random weights: what is timed is the same
arithmetic. The table says which stand-ins were used. torch is imported only here and is
not a dependency of pose_vq; without it, or without a checkout, the command stops with
one line.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import statistics
import sys
import tempfile
import time
import types
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from pose_vq import config as config_lib
from pose_vq import errors
from pose_vq.benchmarks import harness, model

# pose_vq mode -> the reference's (model_input, model_recon).
REFERENCE_MODES = {"3d": ("3d", "3d"), "m2d": ("m2d", "m2d"), "c2d": ("c2d", "2d"),
                   "m2d_3d": ("m2d", "3d")}
# Modules the reference imports for logging, videos and metrics, none of them in its step.
OPTIONAL_MODULES = ("wandb", "cv2", "imageio", "torchsummary", "imgaug", "imgaug.augmenters",
                    "imgaug.augmentables", "piq", "skimage", "skimage.metrics", "torchvision",
                    "torchvision.models", "torchvision.transforms")
FLAGS = flags.FLAGS


class ReferenceError(errors.ActionableError, RuntimeError):
    """torch or the reference checkout is missing or unusable; the message says which."""


def _absent(name: str) -> types.ModuleType:
    """An empty stand-in module: any public attribute is a callable that returns None."""
    module = types.ModuleType(name)

    def attribute(attr: str) -> Any:
        if attr.startswith("__"):  # what import machinery and inspection probe for
            raise AttributeError(attr)
        return lambda *args, **kwargs: None

    module.__getattr__ = attribute  # type: ignore[method-assign]
    module.__path__ = []  # a package, so its submodules' stand-ins can be imported
    return module


def _lpips_stand_in(torch: Any) -> types.ModuleType:
    """``lpips.LPIPS(net="vgg")`` of the same layers and cost: VGG16's 13 convolutions to
    relu5_3, unit-normalised features at relu1_2, 2_2, 3_3, 4_3 and 5_3, squared
    differences weighted per channel by 1x1 convolutions, averaged over space; the trunk
    frozen, as lpips freezes it. Random weights: the arithmetic timed is the same."""
    nn = torch.nn
    widths = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]

    class LPIPS(nn.Module):
        def __init__(self, net: str = "vgg", **_: Any) -> None:
            super().__init__()
            if net != "vgg":
                raise ReferenceError(f"the LPIPS stand-in has VGG16 only, not {net!r}")
            stages, channels = [], 3
            for i, (width, convs) in enumerate(widths):
                layers = [nn.MaxPool2d(2)] if i else []
                for _ in range(convs):
                    layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                    channels = width
                stages.append(nn.Sequential(*layers))
            self.stages = nn.ModuleList(stages)
            self.heads = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w, _ in widths)
            for p in self.stages.parameters():
                p.requires_grad_(False)

        def forward(self, x: Any, y: Any) -> Any:
            total = 0.0
            for stage, head in zip(self.stages, self.heads):
                x, y = stage(x), stage(y)
                nx = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                ny = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + head((nx - ny) ** 2).mean((2, 3), keepdim=True)
            return total

    module = types.ModuleType("lpips")
    module.LPIPS = LPIPS
    return module


def install_stand_ins(torch: Any) -> list[str]:
    """Put stand-ins in ``sys.modules`` for the optional modules that fail to import and
    for LPIPS when its VGG16 weights cannot be loaded; returns the names replaced."""
    replaced = []
    for name in OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = _absent(name)
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, sys.modules[name])
            replaced.append(name)
    try:
        import lpips  # noqa: PLC0415 (the reference's own LPIPS, when it loads offline)

        lpips.LPIPS(net="vgg", verbose=False)
    except Exception:  # a missing package, or VGG16 weights it cannot download offline
        sys.modules["lpips"] = _lpips_stand_in(torch)
        replaced.append("lpips (VGG16 of random weights)")
    return replaced


def import_torch() -> Any:
    try:
        import torch  # noqa: PLC0415 (torch is no dependency: only this command needs it)
    except ImportError:
        raise ReferenceError("the reference needs PyTorch, which is not installed: "
                             "pip install torch") from None
    return torch


def checkout(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` resolved, when it holds the reference's ``vqgan`` and ``trainer`` packages."""
    root = pathlib.Path(path).expanduser().resolve()
    if not all((root / package / "__init__.py").is_file() for package in ("vqgan", "trainer")):
        raise ReferenceError(f"{root}: not a checkout of the reference (no vqgan/ and trainer/ "
                             "packages): git clone TeCSAR-UNCC/Pose-Quantization")
    return root


def import_reference(path: str | pathlib.Path) -> tuple[Any, Any]:
    """The checkout's ``VQGAN`` and ``VQGANTrainer`` classes (``install_stand_ins`` first)."""
    root = checkout(path)
    sys.path.insert(0, str(root))
    try:
        vqgan = importlib.import_module("vqgan")
        trainer = importlib.import_module("trainer")
    except Exception as e:
        raise ReferenceError(f"{root}: importing the reference failed: "
                             f"{type(e).__name__}: {e}") from None
    return vqgan.VQGAN, trainer.VQGANTrainer


def reference_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The reference ``VQGAN``'s arguments for a pose_vq config's model."""
    spec = config_lib.generator_spec(config, "cpu")
    m = config.model
    return {
        "in_channels": spec.in_channels, "out_channels": spec.out_channels,
        "discriminator_channels": spec.out_channels, "img_size": spec.image_size,
        "latent_channels": spec.latent_channels,
        "latent_size": spec.image_size // 2 ** m.spatial_downsamples,
        "intermediate_channels": list(spec.channels),
        "num_residual_blocks_encoder": spec.encoder_blocks,
        "num_residual_blocks_decoder": spec.decoder_blocks,
        "downsample_layers": m.spatial_downsamples, "upsample_layers": m.spatial_downsamples,
        "temporal_downsample_layers": m.temporal_downsamples,
        "temporal_upsample_layers": m.temporal_downsamples,
        "attention_resolution": list(spec.attention_resolutions),
        "num_codebook_vectors": spec.num_codes, "reduce_temporal": spec.reduce_temporal,
    }


def _time(torch: Any, fn: Any, repeats: int) -> float:
    """Mean seconds per call after one warm-up call (waits for CUDA's queue)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def measure_reference(job: dict[str, Any]) -> dict[str, Any]:
    """One reference row (in its own process): seconds per step or encode."""
    torch = import_torch()
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    replaced = install_stand_ins(torch)
    VQGAN, VQGANTrainer = import_reference(job["reference"])
    config = ml_collections.ConfigDict(json.loads(job["config"]))
    kwargs = reference_kwargs(config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    vqgan = VQGAN(**kwargs).to(device)
    if job["what"] == "step" and job["batch"] > 1:
        # The reference's step views its decoder's output flat, which fails on the
        # non-contiguous tensor it gets at batch >= 2: the same values, laid out anew.
        forward = vqgan.forward
        vqgan.forward = lambda x: (lambda d, i, q: (d.contiguous(), i, q))(*forward(x))
        replaced.append("contiguous decoder output (the step's .view fails at batch >= 2)")
    batch, c = job["batch"], config.data
    clip = lambda channels: torch.rand(batch, channels, c.frames, c.heatmap_size,
                                       c.heatmap_size, device=device)
    model_input, model_recon = REFERENCE_MODES[c.mode]
    # The step picks its input and its target from a 2D and a 3D batch by mode.
    two_d = clip(kwargs["in_channels"]) if model_input != "3d" else None
    three_d = None
    if "3d" in (model_input, model_recon):
        three_d = clip(kwargs["in_channels"] if model_input == "3d" else kwargs["out_channels"])
    inputs = two_d if two_d is not None else three_d
    if job["what"] == "step":
        lo, opt = config.loss, config.optimizer
        trainer = VQGANTrainer(
            model_config=kwargs, vqgan=vqgan, device=device, learning_rate=opt.learning_rate,
            beta1=opt.b1, beta2=opt.b2, perceptual_loss_factor=lo.perceptual_weight,
            rec_loss_factor=lo.l1_weight, disc_factor=lo.adversarial_weight,
            disc_start=lo.disc_start, experiment_dir=tempfile.mkdtemp(),
            model_input=model_input, model_recon=model_recon,
            run=types.SimpleNamespace(name=""))
        run = lambda: trainer.step(two_d, three_d)
    else:
        vqgan.eval()

        def run():
            with torch.no_grad():
                return vqgan.encode(inputs)
    seconds = _time(torch, run, job["steps"])
    return {"side": "reference", "what": job["what"], "batch": batch, "seconds": seconds,
            "device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in vqgan.parameters()), "stand_ins": replaced}


def compare(config: ml_collections.ConfigDict, reference: str, whats: list[str],
            batch_sizes: list[int], steps: int, rounds: int, threads: int
            ) -> list[dict[str, Any]]:
    """Per (what, batch): ``rounds`` pairs of fresh processes, pose_vq's then the
    reference's; the rows carry both sides' seconds and the ratio of each pair."""
    rows = []
    for what in whats:
        for batch in batch_sizes:
            ours, theirs = [], []
            for _ in range(rounds):
                ours.append(model.run_row(what, config, batch, steps))
                theirs.append(harness.run_job("pose_vq.benchmarks.reference", {
                    "what": what, "batch": batch, "steps": steps, "threads": threads,
                    "reference": reference, "config": config.to_json_best_effort()}, "row"))
            ratios = [t["seconds"] / o["seconds"] for o, t in zip(ours, theirs)]
            rows.append({
                "what": what, "batch": batch, "rounds": rounds,
                "pose_vq_seconds": statistics.median(o["seconds"] for o in ours),
                "reference_seconds": statistics.median(t["seconds"] for t in theirs),
                "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                "ratio_max": max(ratios), "platform": ours[0]["platform"],
                "reference_device": theirs[0]["device"], "torch": theirs[0]["torch"],
                "torch_threads": theirs[0]["threads"],
                "reference_params": theirs[0]["params"], "stand_ins": theirs[0]["stand_ins"]})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    r = rows[0]
    print(f"# pose_vq against the reference on {harness.machine()}: pose_vq on {r['platform']}, "
          f"the reference on {r['reference_device']} (torch {r['torch']}, "
          f"{r['torch_threads']} threads); {r['rounds']} rounds of fresh processes")
    print(f"{'what':<7} {'batch':>5} {'pose_vq s':>10} {'reference s':>12} "
          f"{'ratio':>6} {'min':>6} {'max':>6}")
    for r in rows:
        print(f"{r['what']:<7} {r['batch']:5d} {r['pose_vq_seconds']:10.3f} "
              f"{r['reference_seconds']:12.3f} {r['ratio']:5.2f}x {r['ratio_min']:5.2f}x "
              f"{r['ratio_max']:5.2f}x")
    print("seconds: per call after a warm-up, median over rounds; ratio: reference / pose_vq "
          "per round (median, min, max); reference generator parameters: "
          f"{rows[0]['reference_params']:,}")
    stand_ins = list(dict.fromkeys(name for r in rows for name in r["stand_ins"]))
    if stand_ins:
        print("stand-ins on the reference's side: " + ", ".join(stand_ins))


@errors.one_line_failures
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.row:  # one measurement, in the fresh process compare() starts
        print(json.dumps(measure_reference(json.loads(pathlib.Path(FLAGS.row).read_text()))))
        return
    if FLAGS.config is None or not FLAGS.reference:
        raise app.UsageError("--config and --reference are required")
    q = FLAGS.config.quantizer
    if q.kind not in ("ema", "learned") or q.stages != 1:
        raise ReferenceError(f"the reference has one VQ codebook, not quantizer.kind={q.kind!r} "
                             f"in {q.stages} stage(s): compare the paper's quantizer "
                             "(e.g. --config=configs/3d_1024.py:paper)")
    if "step" in FLAGS.what and FLAGS.config.loss.gradient_weight:
        raise ReferenceError("the reference's step has no gradient loss, so its time is not "
                             "comparable: add --config.loss.gradient_weight=0")
    import_torch()  # fail in one line before any timing
    checkout(FLAGS.reference)
    rows = compare(FLAGS.config, FLAGS.reference, FLAGS.what,
                   [int(b) for b in FLAGS.batch_sizes], FLAGS.steps, FLAGS.rounds,
                   FLAGS.torch_threads)
    harness.emit(rows, print_table, FLAGS.json)


def define_flags() -> None:
    """The command's flags (defined when it runs, as every pose_vq command's are)."""
    config_flags.DEFINE_config_file("config", None, "pose_vq config (configs/*.py[:arg]) whose "
                                    "shapes both sides run.", lock_config=False)
    flags.DEFINE_string("reference", None, "A checkout of TeCSAR-UNCC/Pose-Quantization.")
    flags.DEFINE_list("what", ["step", "encode"], "step (a training step) and/or encode.")
    flags.DEFINE_list("batch_sizes", ["1"], "Batch sizes, one row each.")
    flags.DEFINE_integer("steps", 3, "Timed calls after a warm-up call, per process.")
    flags.DEFINE_integer("rounds", 3, "Pairs of fresh processes (pose_vq, reference) per row.")
    flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: torch's default).")
    flags.DEFINE_bool("json", False, "One JSON object per row instead of the table.")
    flags.DEFINE_string("row", None, "Internal: measure one reference row from this job file.")
    errors.define_verbose_flag()


if __name__ == "__main__":
    define_flags()
    app.run(main)
