"""`slimdrive bench policy`: the packed ternary runtime against the training graph and the float twins.

One run measures, for four variants of the same architecture (``conf/model``), batch 1, eight cameras at the
recorded resolution (``camera_height`` x ``camera_width``, 64x128), ``DrivingPolicy.act`` end to end
(validation, resizing to the model's input, network, controllers), the variants taking turns of ten calls:

* ``packed``: the exported file loaded on the ternary runtime (`agent.runtime`);
* ``fake_quant``: the ternary training graph (`BitLinear` with straight-through quantization, float matmuls);
* ``fp32`` and ``bf16``: the full-precision twin (``quant=none``) in float32 and in bfloat16.

It reports latency p50/p99 (and, timed apart the same way, the p50 of the network's forward alone on inputs
prepared once: what the runtime itself costs), camera frames per second, weight bytes on disk and resident, and
an estimate of the arithmetic energy per step from the per-operation energies of Horowitz (ISSCC 2014), 45 nm.
The estimate counts arithmetic only (no memory traffic) and treats a ternary multiply-accumulate as one 8-bit
integer add (the multiply by -1/0/+1 is a sign selection), as the BitNet b1.58 paper does. bfloat16 is priced at
the table's 16-bit float figures. Weights are random (seeded): latency and size do not depend on their values.
"""
from __future__ import annotations

import copy
import json
import platform
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from omegaconf import DictConfig, OmegaConf

from agent.export import export_packed, save_checkpoint
from agent.model import DrivingNet, ModelConfig
from agent.policy import DrivingPolicy, Footprint

ENERGY_SOURCE = "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm"
ENERGY_PJ = {  # picojoules per operation, from ENERGY_SOURCE
    "int8_add": 0.03,
    "int8_mult": 0.2,
    "int32_add": 0.1,
    "fp16_add": 0.4,
    "fp16_mult": 1.1,
    "fp32_add": 0.9,
    "fp32_mult": 3.7,
}
FLOAT_MAC_PJ = {
    "float32": ENERGY_PJ["fp32_mult"] + ENERGY_PJ["fp32_add"],
    "bfloat16": ENERGY_PJ["fp16_mult"] + ENERGY_PJ["fp16_add"],
}
TERNARY_MAC_PJ = ENERGY_PJ["int8_add"]


def observation(cfg: ModelConfig, height: int, width: int, rng: np.random.Generator) -> dict[str, Any]:
    """One observation with cameras at the recorded size ``height`` x ``width`` (resized by every `act`)."""
    return {
        "cameras": rng.integers(0, 256, (cfg.cameras, height, width, 3), dtype=np.uint8),
        "speed": np.array([5.0], np.float32),
        "target_point": np.array([12.0, -1.5], np.float32),
        "command": 4,
    }


ROUND = 10  # timed calls per variant per turn


def latency_ms(policies: dict[str, DrivingPolicy], obs: dict[str, Any], warmup: int, iterations: int,
               network_only: bool = False) -> dict[str, list[float]]:
    """Per variant, the wall time of each `act` call (or, with `network_only`, of the network's forward alone on
    inputs prepared once). The variants take turns of `ROUND` timed calls, each turn after one untimed call (so
    each variant's weights are back in cache, as on a computer that runs only it), so that a change of machine
    load during the run touches them all alike and their ratios stay fair."""
    calls = {}
    for name, policy in policies.items():
        policy.reset()
        calls[name] = partial(_forward, policy.net, policy.inputs(obs)) if network_only else partial(policy.act, obs)
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in policies}
    for done in range(0, iterations, ROUND):
        for name, call in calls.items():
            call()
            for _ in range(min(ROUND, iterations - done)):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _forward(net: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    with torch.inference_mode():
        net(*inputs)


def machine() -> dict[str, Any]:
    """The machine a benchmark ran on: the CPU's model name, the instruction set torch uses, cores, torch."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return {
        "cpu": names[0] if names else cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cores": psutil.cpu_count(),
        "torch": torch.__version__,
    }


def energy_uj(footprint: Footprint) -> float:
    """Arithmetic energy of one step (microjoules) from its MAC counts, priced at `ENERGY_PJ` (`ENERGY_SOURCE`)."""
    picojoules = footprint.ternary_macs * TERNARY_MAC_PJ + footprint.float_macs * FLOAT_MAC_PJ[footprint.dtype]
    return picojoules * 1e-6


def run(cfg: DictConfig) -> int:
    quick = bool(cfg.quick)
    iterations = int(cfg.quick_iterations if quick else cfg.iterations)
    warmup = int(cfg.quick_warmup if quick else cfg.warmup)
    net_values = OmegaConf.to_container(cfg.model.net, resolve=True)
    ternary_cfg = ModelConfig.from_dict({**net_values, "quant": "ternary"})
    twin_cfg = ModelConfig.from_dict({**net_values, "quant": "none"})

    torch.manual_seed(int(cfg.seed))
    ternary_net = DrivingNet(ternary_cfg)
    twin_net = DrivingNet(twin_cfg)
    with tempfile.TemporaryDirectory(prefix="slimdrive-bench-") as scratch:
        workdir = Path(cfg.workdir) if cfg.workdir else Path(scratch)
        packed_file = export_packed(ternary_net, workdir / "policy_ternary.safetensors")
        twin_file = save_checkpoint(twin_net, workdir / "policy_fp32.safetensors")
        disk_bytes = {"packed": packed_file.stat().st_size, "fp32": twin_file.stat().st_size}
        policies = {
            "packed": DrivingPolicy.from_packed(packed_file),
            "fake_quant": DrivingPolicy(ternary_net),
            "fp32": DrivingPolicy(twin_net),
            "bf16": DrivingPolicy(copy.deepcopy(twin_net).to(torch.bfloat16)),
        }

    recorded = (int(cfg.camera_height), int(cfg.camera_width))
    obs = observation(ternary_cfg, *recorded, np.random.default_rng(int(cfg.seed)))
    variants: dict[str, dict[str, Any]] = {}
    latencies = latency_ms(policies, obs, warmup, iterations)
    network = latency_ms(policies, obs, warmup, iterations, network_only=True)
    for name, policy in policies.items():
        footprint = policy.footprint()
        times = latencies[name]
        p50 = float(np.percentile(times, 50))
        variants[name] = {
            "latency_ms_p50": round(p50, 3),
            "latency_ms_p99": round(float(np.percentile(times, 99)), 3),
            "network_ms_p50": round(float(np.percentile(network[name], 50)), 3),
            "camera_frames_per_s": round(ternary_cfg.cameras * 1e3 / p50, 1),
            "weight_bytes_resident": footprint.weight_bytes,
            "weight_bytes_disk": disk_bytes.get(name),
            "parameters": footprint.parameters,
            "ternary_macs_per_step": footprint.ternary_macs,
            "float_macs_per_step": footprint.float_macs,
            "float_dtype": footprint.dtype,
            "arithmetic_energy_uj_per_step": round(energy_uj(footprint), 2),
        }
    packed, fp32, bf16 = variants["packed"], variants["fp32"], variants["bf16"]
    goals = {
        "packed_vs_fp32_latency": round(packed["latency_ms_p50"] / fp32["latency_ms_p50"], 3),
        "packed_vs_fp32_network_latency": round(packed["network_ms_p50"] / fp32["network_ms_p50"], 3),
        "packed_vs_bf16_latency": round(packed["latency_ms_p50"] / bf16["latency_ms_p50"], 3),
        "fp32_vs_packed_bytes_disk": round(fp32["weight_bytes_disk"] / packed["weight_bytes_disk"], 2),
        "fp32_vs_packed_bytes_resident": round(fp32["weight_bytes_resident"] / packed["weight_bytes_resident"], 2),
    }
    goals["met"] = {
        "step latency <= 0.5 x fp32": goals["packed_vs_fp32_latency"] <= 0.5,
        "network latency <= 0.5 x fp32": goals["packed_vs_fp32_network_latency"] <= 0.5,
        "latency <= 1.0 x bf16": goals["packed_vs_bf16_latency"] <= 1.0,
        ">= 1500 camera frames/s": packed["camera_frames_per_s"] >= 1500,
        ">= 10x smaller on disk": goals["fp32_vs_packed_bytes_disk"] >= 10,
        ">= 10x smaller resident": goals["fp32_vs_packed_bytes_resident"] >= 10,
    }
    result = {
        "model": OmegaConf.to_container(cfg.model.net, resolve=True),
        "mode": "quick" if quick else "full",
        "iterations": iterations,
        "warmup": warmup,
        "batch": 1,
        "recorded_cameras": f"{recorded[0]}x{recorded[1]}",
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "variants": variants,
        "goals": goals,
        "energy": {"source": ENERGY_SOURCE, "pj_per_op": ENERGY_PJ, "ternary_mac_pj": TERNARY_MAC_PJ,
                   "float_mac_pj": FLOAT_MAC_PJ, "counts": "arithmetic only, no memory traffic"},
    }
    _print(result)
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out.resolve()}")
    return 0


def _print(result: dict[str, Any]) -> None:
    model = result["model"]
    print(
        f"slimdrive bench policy ({result['mode']}, {result['iterations']} steps, batch 1, {model['cameras']} cameras "
        f"{result['recorded_cameras']} resized to {model['image_height']}x{model['image_width']} in every step, "
        f"{result['threads']} threads, {result['machine']['cpu']}, {result['machine']['cpu_capability']})"
    )
    header = (f"{'variant':<11}{'p50 ms':>9}{'p99 ms':>9}{'frames/s':>10}{'network ms':>12}{'resident B':>12}"
              f"{'disk B':>11}{'energy uJ':>11}")
    print(header)
    for name, v in result["variants"].items():
        disk = "-" if v["weight_bytes_disk"] is None else str(v["weight_bytes_disk"])
        print(
            f"{name:<11}{v['latency_ms_p50']:>9.2f}{v['latency_ms_p99']:>9.2f}{v['camera_frames_per_s']:>10.0f}"
            f"{v['network_ms_p50']:>12.2f}{v['weight_bytes_resident']:>12}{disk:>11}{v['arithmetic_energy_uj_per_step']:>11.1f}"
        )
    goals = result["goals"]
    print(
        f"packed/fp32 latency: step {goals['packed_vs_fp32_latency']}, network "
        f"{goals['packed_vs_fp32_network_latency']}; packed/bf16 latency {goals['packed_vs_bf16_latency']}, "
        f"fp32/packed bytes: disk {goals['fp32_vs_packed_bytes_disk']}x, "
        f"resident {goals['fp32_vs_packed_bytes_resident']}x"
    )
    print("goals: " + ", ".join(f"{goal}: {'met' if ok else 'NOT met'}" for goal, ok in goals["met"].items()))
    print(f"energy per operation: {result['energy']['source']} (arithmetic only)")
