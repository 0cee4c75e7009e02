"""`slimdrive bench train`: what training the policy costs on this machine, and what the trained network costs to
run, measured side by side in one run.

training   whole training steps as `slimdrive train` takes them (`training.train`: the shared brightness and
           contrast augmentation, the network, the weighted losses of `conf/train.yaml`, backward, gradient
           clipping, AdamW on its parameter groups) at the configured batch size, for the policy (``quant:
           ternary``, fake-quant with the straight-through estimator) and its full-precision twin
           (``quant: none``), the two taking turns of `round` steps so that a change of machine load touches both
           alike. Batches come from the log below, read before timing: this is the network and the optimiser.
reading    `DrivingLogDataset` through `make_loader` at the model's resolution with the configured workers
           (`bench.data.loader_rate`), on a synthetic log (`training.logs.synthetic`: crops of the embedded
           renderer's picture, 64x128 JPEG mosaics like the recorded ones) written to a temporary folder, from
           the decoded-frame cache (`frame_cache`, as `slimdrive train` reads) and decoding the JPEGs.
loop       the whole loop: ternary training steps fed by that DataLoader, its workers sharing the cores with
           the network as they do in `slimdrive train`, from the frame cache and from the JPEGs.
runtime    the ternary network exported and loaded on the packed runtime, and its float32 twin, driving
           `DrivingPolicy.act` at batch 1 from eight cameras at the recorded 64x128 (so the resize to the
           model's input counts), taking turns (`bench.policy.latency_ms`).

Weights are random (seeded): speed does not depend on their values.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import RandomSampler

from agent.export import export_packed
from agent.model import DrivingNet, ModelConfig
from agent.policy import DrivingPolicy
from training.logs.reader import DrivingLogDataset, make_loader
from training.logs.synthetic import metadata, steps
from training.logs.writer import write_episode
from training.train import augment, losses, parameter_groups, pick_device

from .data import loader_rate
from .policy import latency_ms, machine, observation

VARIANTS = ("ternary", "none")


def write_log(root: Path, cfg: ModelConfig, episodes: int, steps_per_episode: int) -> DrivingLogDataset:
    """A synthetic log of recorded-size (64x128) cameras whose labels fit the network (its waypoint count),
    read at the network's resolution."""
    for episode in range(episodes):
        write_episode(root, f"bench-s{episode}", metadata("bench", episode),
                      steps(steps_per_episode, episode, waypoints_k=cfg.waypoints))
    return DrivingLogDataset(root, "all", image_size=(cfg.image_height, cfg.image_width))


def optimizer_for(net: DrivingNet, quant: str, train: DictConfig) -> torch.optim.Optimizer:
    recipe = train.recipe[quant]
    groups = [{**group, "weight_decay": recipe.weight_decay if group["decay"] else 0.0}
              for group in parameter_groups(net)]
    return torch.optim.AdamW(groups, lr=recipe.peak_lr, betas=(0.9, 0.95))


def training_step(net: DrivingNet, optimizer: torch.optim.Optimizer, loaded: dict[str, torch.Tensor],
                  train: DictConfig, generator: torch.Generator, device: torch.device) -> None:
    """One step as `slimdrive train` takes it: augment on the CPU, move, forward, losses, backward, clip, step."""
    batch = {name: value.to(device) for name, value in loaded.items()}
    cameras = augment(loaded["cameras"], generator, float(train.augment)).to(device)
    out = net(cameras, batch["speed"], batch["target_point"], batch["command"])
    terms = losses(out, batch, train)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), float(train.grad_clip))
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step_seconds(nets: dict[str, DrivingNet], batches: list[dict[str, torch.Tensor]], train: DictConfig,
                          device: torch.device, warmup: int, timed: int, round_steps: int) -> dict[str, list[float]]:
    """Per network, the wall time of each of `timed` training steps after `warmup` untimed ones; the networks
    take turns of `round_steps` steps."""
    optimizers = {quant: optimizer_for(net, quant, train) for quant, net in nets.items()}
    generator = torch.Generator().manual_seed(0)
    done = {quant: 0 for quant in nets}
    seconds: dict[str, list[float]] = {quant: [] for quant in nets}
    while any(len(seconds[quant]) < timed for quant in nets):
        for quant, net in nets.items():
            for _ in range(round_steps):
                if len(seconds[quant]) >= timed:
                    break
                start = time.perf_counter()
                training_step(net, optimizers[quant], batches[done[quant] % len(batches)], train, generator, device)
                done[quant] += 1
                if done[quant] > warmup:
                    seconds[quant].append(time.perf_counter() - start)
    return seconds


def loop_rate(net: DrivingNet, dataset: DrivingLogDataset, train: DictConfig, device: torch.device,
              batches: int, seed: int) -> float:
    """Samples/s of the whole loop: `batches` training steps of the ternary network fed by `make_loader` with the
    configured workers on the same cores, as `slimdrive train` runs (the first batch, which starts the
    workers, is not timed)."""
    batch_size = int(train.batch_size)
    sampler = RandomSampler(dataset, replacement=True, num_samples=(batches + 1) * batch_size,
                            generator=torch.Generator().manual_seed(seed))
    optimizer, generator = optimizer_for(net, "ternary", train), torch.Generator().manual_seed(seed)
    loader = iter(make_loader(dataset, batch_size, sampler=sampler, workers=int(train.workers), drop_last=True))
    training_step(net, optimizer, next(loader), train, generator, device)
    began, n = time.perf_counter(), 0
    for loaded in loader:
        training_step(net, optimizer, loaded, train, generator, device)
        n += len(loaded["cameras"])
    return n / (time.perf_counter() - began)


def run(cfg: DictConfig) -> int:
    quick = bool(cfg.quick)
    train = cfg.train
    device = pick_device(str(train.device))
    if train.threads:
        torch.set_num_threads(int(train.threads))
    batch_size, workers = int(train.batch_size), int(train.workers)
    net_values = OmegaConf.to_container(cfg.model.net, resolve=True)
    configs = {quant: ModelConfig.from_dict({**net_values, "quant": quant}) for quant in VARIANTS}
    model_cfg = configs["ternary"]
    timed, warmup = (int(cfg.quick_steps), int(cfg.quick_warmup)) if quick else (int(cfg.steps), int(cfg.warmup))
    episodes = int(cfg.quick_episodes if quick else cfg.episodes)
    per_episode = int(cfg.quick_steps_per_episode if quick else cfg.steps_per_episode)
    iterations = int(cfg.quick_steps if quick else cfg.iterations)

    torch.manual_seed(int(cfg.seed))
    nets = {quant: DrivingNet(configs[quant]).to(device).train() for quant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="slimdrive-bench-train-") as scratch:
        dataset = write_log(Path(scratch) / "log", model_cfg, episodes, per_episode)
        sources = {"jpeg": dataset, "frame_cache": DrivingLogDataset(dataset.root, "all", image_size=dataset.image_size,
                                                                    frame_cache=True, cache_workers=0)}
        loader_samples = 2 * batch_size if quick else int(cfg.loader_samples)
        reading = {name: loader_rate(source, workers, loader_samples, batch_size, int(cfg.seed))
                   for name, source in sources.items()}
        loop_batches = 1 if quick else int(cfg.loop_batches)
        loop = {name: loop_rate(DrivingNet(model_cfg).to(device).train(), source, train, device, loop_batches,
                                int(cfg.seed)) for name, source in sources.items()}
        sampler = RandomSampler(dataset, replacement=True, num_samples=4 * batch_size,
                                generator=torch.Generator().manual_seed(int(cfg.seed)))
        batches = list(make_loader(dataset, batch_size, sampler=sampler))
        step_seconds = training_step_seconds(nets, batches, train, device, warmup, timed, int(cfg.round))

        packed_file = export_packed(nets["ternary"].cpu().eval(), Path(scratch) / "policy.safetensors")
        policies = {"packed": DrivingPolicy.from_packed(packed_file), "fp32": DrivingPolicy(nets["none"].cpu())}
    recorded = (int(cfg.camera_height), int(cfg.camera_width))
    obs = observation(model_cfg, *recorded, np.random.default_rng(int(cfg.seed)))
    latencies = latency_ms(policies, obs, 1 if quick else 20, iterations)

    training = {quant: batch_size / float(np.median(step_seconds[quant])) for quant in VARIANTS}
    runtime = {name: {"latency_ms_p50": float(np.percentile(times, 50)),
                      "latency_ms_p99": float(np.percentile(times, 99)),
                      "camera_frames_per_s": model_cfg.cameras * 1e3 / float(np.percentile(times, 50))}
               for name, times in latencies.items()}
    figures: dict[str, Any] = {
        "model": {"name": str(cfg.model.name), **net_values},
        "mode": "quick" if quick else "full",
        "device": str(device),
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "training_samples_per_s": training,
        "training_steps_timed": timed,
        "reading": {"samples_per_s": reading, "workers": workers, "steps": len(dataset),
                    "resolution": f"{model_cfg.image_height}x{model_cfg.image_width}"},
        "training_loop_samples_per_s": loop,
        "training_loop_batches": loop_batches,
        "runtime": {"recorded_cameras": f"{recorded[0]}x{recorded[1]}", "iterations": iterations, **runtime},
        "ratios": {
            "ternary_vs_fp_training": training["ternary"] / training["none"],
            "reading_vs_ternary_training": reading["frame_cache"] / training["ternary"],
            "loop_frame_cache_vs_jpeg": loop["frame_cache"] / loop["jpeg"],
            "packed_vs_fp32_latency": runtime["packed"]["latency_ms_p50"] / runtime["fp32"]["latency_ms_p50"],
        },
    }
    _print(figures)
    if cfg.out:
        out = Path(str(cfg.out))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {out.resolve()}")
    return 0


def _print(figures: dict[str, Any]) -> None:
    model, m, ratios = figures["model"], figures["machine"], figures["ratios"]
    train, reading, runtime = figures["training_samples_per_s"], figures["reading"], figures["runtime"]
    print(f"slimdrive bench train ({figures['mode']}): {model['name']}, {model['cameras']} cameras at "
          f"{reading['resolution']}, batch {figures['batch_size']}, {figures['threads']} threads on "
          f"{figures['device']}, {m['cpu']} ({m['logical_cores']} logical cores, {m['cpu_capability']}), "
          f"torch {m['torch']}")
    print(f"  training  ternary {train['ternary']:7.1f} samples/s   fp twin {train['none']:7.1f} samples/s   "
          f"ternary/fp {ratios['ternary_vs_fp_training']:.2f}   (median of {figures['training_steps_timed']} steps "
          "each, taking turns)")
    rates = reading["samples_per_s"]
    print(f"  reading   frame cache {rates['frame_cache']:7.1f} samples/s   JPEG decode {rates['jpeg']:7.1f} "
          f"samples/s   with {reading['workers']} worker(s), random access over {reading['steps']} synthetic steps   "
          f"reading (frame cache)/training {ratios['reading_vs_ternary_training']:.2f}")
    loop = figures["training_loop_samples_per_s"]
    print(f"  loop      frame cache {loop['frame_cache']:7.1f} samples/s   JPEG decode {loop['jpeg']:7.1f} "
          f"samples/s   ternary training fed by the DataLoader's workers on the same cores, "
          f"{figures['training_loop_batches']} batches   cache/JPEG {ratios['loop_frame_cache_vs_jpeg']:.2f}")
    for name, label in (("packed", "packed runtime"), ("fp32", "float32 twin")):
        r = runtime[name]
        print(f"  {label:<15} p50 {r['latency_ms_p50']:6.2f} ms  p99 {r['latency_ms_p99']:6.2f} ms  "
              f"{r['camera_frames_per_s']:7.0f} camera frames/s   (batch 1, {runtime['recorded_cameras']} "
              "cameras resized in every step)")
    print(f"  packed/fp32 latency {ratios['packed_vs_fp32_latency']:.2f}")
