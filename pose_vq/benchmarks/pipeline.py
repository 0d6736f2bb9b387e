"""``pipeline``: what the training input path sustains on the config's dataset (built
first if the config says how; with neither a built dataset nor a Panoptic root, a
synthetic one is built in the workdir): stored uint8 clips per second and MB/s, read by grain and
placed on the devices as the loop gets them (``data.prefetch`` ahead), beside what the
step consumes: the steps per second those clips feed at the config's batch and, with
``--steps`` > 0, the step's own rate."""

from __future__ import annotations

import time

import jax
import ml_collections

from pose_vq import sharding
from pose_vq.benchmarks import harness, model


def loader_rate(config: ml_collections.ConfigDict, workdir: str, batches: int) -> dict:
    """Clips and bytes per second of the training batches, on the devices (global)."""
    from pose_vq.data import pipeline, prepare  # noqa: PLC0415 (TFDS, grain: 1.2-1.4 s, here alone)

    try:
        data_dir, name = prepare.prepare_dataset(config.data, workdir)
    except FileNotFoundError:
        data = ml_collections.ConfigDict(config.data.to_dict())
        # <workdir>/tensorflow_datasets; longer sequences than the default, for several
        # batches of distinct paper-sized clips
        data.update(synthetic=True, data_dir="", synthetic_sequences=max(data.synthetic_sequences, 16),
                    synthetic_frames=max(data.synthetic_frames, 1800))
        data_dir, name = prepare.prepare_dataset(data, workdir)
    loader = pipeline.GlobalBatches(pipeline.training_loader_config(config, data_dir, name),
                                    sharding.make_mesh(config.sharding.mesh),
                                    prefetch=config.data.prefetch)
    clips = lambda batch: list(pipeline.model_fields(batch).values())
    for _ in range(2):  # worker start-up, first reads and the prefetch queue
        jax.block_until_ready(clips(next(loader)))
    start = time.perf_counter()
    for _ in range(batches):
        arrays = clips(next(loader))
        jax.block_until_ready(arrays)  # the copies to the devices count
    seconds = (time.perf_counter() - start) / batches
    batch_bytes = sum(a.nbytes for a in arrays)
    return {"dataset": name, "data_dir": data_dir, "batch": config.train.batch_size,
            "clip_shape": list(arrays[0].shape[1:]), "dtype": str(arrays[0].dtype),
            "clip_bytes": batch_bytes // config.train.batch_size,
            "workers": config.data.worker_count, "prefetch": config.data.prefetch,
            "seconds_per_batch": seconds, "clips_per_sec": config.train.batch_size / seconds,
            "mb_per_sec": batch_bytes / seconds / 1e6,
            "steps_per_sec_fed": 1.0 / seconds}


def run(config: ml_collections.ConfigDict, workdir: str, batches: int, steps: int) -> dict:
    """The input path's rate and, with ``steps`` > 0, one step row at the config's batch."""
    result = {"loader": loader_rate(config, workdir, batches)}
    if steps > 0:
        result["step"] = model.run_rows("step", config, [config.train.batch_size], [], steps)[0]
    return result


def print_table(result: dict) -> None:
    loader = result["loader"]
    shape = "x".join(map(str, loader["clip_shape"]))
    print(f"# pipeline benchmark on {harness.machine()}: {loader['dataset']} ({shape} "
          f"{loader['dtype']} clips, {loader['clip_bytes'] / 1e6:.2f} MB each), global batch "
          f"{loader['batch']}, {loader['workers']} grain workers, prefetch {loader['prefetch']}")
    print(f"{'stage':<12} {'s/batch':>8} {'clips/s':>9} {'MB/s':>8} {'steps/s':>8}")
    print(f"{'loader':<12} {loader['seconds_per_batch']:8.3f} {loader['clips_per_sec']:9.1f} "
          f"{loader['mb_per_sec']:8.1f} {loader['steps_per_sec_fed']:8.2f}")
    step = result.get("step")
    if step is None:
        print(f"the loader feeds {loader['steps_per_sec_fed']:.2f} steps/s at batch "
              f"{loader['batch']} (--steps=N times the step too)")
        return
    if "error" in step:
        print(f"train step failed: {step['error']}")
        return
    step_rate = step["batch"] / step["seconds"]
    print(f"{'train step':<12} {step['seconds']:8.3f} {step_rate:9.1f} "
          f"{step_rate * loader['clip_bytes'] / 1e6:8.1f} {1 / step['seconds']:8.2f}")
    ratio = loader["clips_per_sec"] / step_rate
    print(f"the loader delivers {ratio:.1f}x what the step consumes: it "
          f"{'keeps up' if ratio >= 1 else 'is the bottleneck'}")
