"""``pipeline``: the grain loader's rate on the config's dataset (built first if the
config says how) beside the rate at which the training step consumes examples."""

from __future__ import annotations

import time

import ml_collections

from pose_vq.benchmarks import harness, model


def loader_rate(config: ml_collections.ConfigDict, workdir: str, batches: int) -> dict:
    """Examples per second of the training loader alone (host side, global batches)."""
    from pose_vq.data import pipeline  # noqa: PLC0415

    data_dir, name = pipeline.prepare_dataset(config.data, workdir)
    loader = pipeline.GlobalBatches(pipeline.LoaderConfig(
        data_dir=data_dir, name=name, split="train", global_batch_size=config.train.batch_size,
        seed=config.seed, worker_count=config.data.worker_count), pipeline.data_mesh())
    for _ in range(2):  # worker start-up and first reads
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    seconds = (time.perf_counter() - start) / batches
    return {"dataset": name, "batch": config.train.batch_size,
            "workers": config.data.worker_count, "seconds_per_batch": seconds,
            "examples_per_sec": config.train.batch_size / seconds}


def run(config: ml_collections.ConfigDict, workdir: str, batches: int, steps: int) -> dict:
    """The loader's rate and one step row of the config at its batch size."""
    loader = loader_rate(config, workdir, batches)
    step = model.run_rows("step", config, [config.train.batch_size], [], steps)[0]
    return {"loader": loader, "step": step}


def print_table(result: dict) -> None:
    loader, step = result["loader"], result["step"]
    print(f"# pipeline benchmark on {harness.machine()}: {loader['dataset']}, global batch "
          f"{loader['batch']}, {loader['workers']} grain workers")
    print(f"{'stage':<12} {'s/batch':>8} {'examples/s':>11}")
    print(f"{'loader':<12} {loader['seconds_per_batch']:8.3f} {loader['examples_per_sec']:11.2f}")
    if "error" in step:
        print(f"train step failed: {step['error']}")
        return
    step_rate = step["batch"] / step["seconds"]
    print(f"{'train step':<12} {step['seconds']:8.3f} {step_rate:11.2f}")
    verdict = "keeps up" if loader["examples_per_sec"] >= step_rate else "is the bottleneck"
    print(f"the loader delivers {loader['examples_per_sec'] / step_rate:.1f}x what the step "
          f"consumes: it {verdict}")
