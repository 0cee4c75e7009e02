"""`slimdrive table`: the slimdrive table. The packed BitNet b1.58 policy, its FP32 twin, the same twin run in
bfloat16 and the expert (the ceiling), side by side, in the spirit of the BitNet b1.58 paper's table against
LLaMA:

* closed loop, on every configured suite: each training seed's weight file is scored by the suite runner of
  `slimdrive eval` (`evaluation.evaluate.run`, its Leaderboard 2.0 scoring and `results.json`), under the
  configured compute budget; the table gives mean ± sample standard deviation over the seeds;
* measured side by side in this run: `DrivingPolicy.act` at batch 1 on cameras of the evaluated env's size (the
  resize to the network's input counted), the variants taking turns (`bench.policy.latency_ms`); weight bytes;
  arithmetic energy per step (`bench.policy.energy_uj`, Horowitz ISSCC 2014); deadline misses from the
  evaluations' budget statistics.

Evaluations live under ``out/evals/<suite>/<row>-<seed index>-<tag>``, the tag a hash of everything the score
depends on (the weight file's bytes, precision, env, budget, expert settings), so a killed table resumes where
it stopped and a retrained file or another budget never reuses stale episodes. Writes ``out/table.md`` (printed
too) and ``out/table.json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from agent.export import CHECKPOINT_FORMAT, PACKED_FORMAT, WeightFileError, file_format
from agent.policy import DrivingPolicy
from agent.registry import AgentError, make_agent
from bench.policy import ENERGY_SOURCE, energy_uj, latency_ms, machine, observation
from bench.table_format import markdown
from envs.provenance import sha256_file
from envs.rig import Rig, RigError, load_rig
from evaluation import evaluate
from scenarios.errors import ScenarioError
from scenarios.metrics import SCORING_VERSION
from scenarios.suites import load_suite

ROWS = ("packed", "fp32", "bf16", "expert")
LABELS = {"packed": "BitNet b1.58, packed ternary", "fp32": "FP32 twin", "bf16": "BF16 twin",
          "expert": "expert (privileged ceiling)"}
# Each row's weight files (config key), the format they must have, and the precision the registry runs them in.
SOURCES = {"packed": ("packed", PACKED_FORMAT, "float32"), "fp32": ("fp", CHECKPOINT_FORMAT, "float32"),
           "bf16": ("fp", CHECKPOINT_FORMAT, "bfloat16")}
# Leaderboard figures read from evaluation's results.json, one value per training seed.
METRICS = {
    "driving_score": lambda r: r["driving_score"],
    "route_completion": lambda r: r["route_completion"],
    "infraction_penalty": lambda r: r["infraction_penalty"],
    "pedestrian_collisions_per_km": lambda r: r["infractions_per_km"].get("collisions_pedestrian", 0.0),
    "vehicle_collisions_per_km": lambda r: r["infractions_per_km"].get("collisions_vehicle", 0.0),
    "success_rate": lambda r: r["success_rate"],
    "missed_deadlines": lambda r: r["budget_stats"]["missed_deadlines"],
}


class TableError(ValueError):
    """A table that cannot be made as configured; the message names the field or file and the fix."""


@dataclass
class Row:
    name: str
    files: list[Path]  # one per training seed; none for the expert
    precision: str
    policy: DrivingPolicy | None  # the first seed's, loaded by the registry: the one whose latency is measured


def spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1) over training seeds; no deviation from a single value."""
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "per_seed": values}


def load_rows(cfg: DictConfig) -> list[Row]:
    """Every row asked for, each file checked by the registry (format, checksum) and against the first file's
    architecture: the twins must differ only in arithmetic."""
    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown or not cfg.rows:
        raise TableError(f"rows={list(cfg.rows)}: expected some of {', '.join(ROWS)} (conf/table.yaml)")
    rows, reference = [], None
    for name in cfg.rows:
        if name == "expert":
            rows.append(Row(name, [], "float32", None))
            continue
        key, expected, precision = SOURCES[name]
        files = [Path(str(f)) for f in cfg[key] or []]
        if not files:
            raise TableError(f"{key}: no files for the {LABELS[name]} row; pass {key}=[a.safetensors,b.safetensors] "
                             f"(one per training seed) or leave {name} out of rows")
        policies = []
        for i, path in enumerate(files):
            where = f"{key}[{i}]={path}"
            if not path.is_file():
                raise TableError(f"{where}: no such file; train it (docs/training.md) or give the right path")
            found = file_format(path)
            if found != expected:
                what = ("the packed export, a training run's policy.safetensors" if key == "packed"
                        else "the FP twin's float checkpoint, model.safetensors of a run with model.net.quant=none")
                raise TableError(f"{where}: a {found or 'non-slimdrive'} file; {key} takes {what}")
            try:
                policy = make_agent(str(path), None, OmegaConf.create({"precision": precision}))
            except (WeightFileError, AgentError) as exc:
                raise TableError(f"{where}: {exc}") from None
            if key == "fp" and policy.cfg.quant != "none":
                raise TableError(f"{where}: a checkpoint of a {policy.cfg.quant} model; the FP twin is trained with "
                                 "model.net.quant=none (its run's model.safetensors)")
            architecture = dataclasses.replace(policy.cfg, quant="none")
            if reference is None:
                reference = (where, architecture)
            elif architecture != reference[1]:
                differ = [f.name for f in dataclasses.fields(architecture)
                          if getattr(architecture, f.name) != getattr(reference[1], f.name)]
                raise TableError(f"{where}: its network differs from {reference[0]}'s in {', '.join(differ)}; "
                                 "a table compares one architecture (conf/model), trained as ternary and as twin")
            policies.append(policy)
        rows.append(Row(name, files, precision, policies[0]))
    return rows


def suite_fingerprint(name_or_path: str) -> list:
    """What a suite's scores depend on: each episode's key, its scenario file's sha256 and its parameters."""
    _, episodes = load_suite(name_or_path)
    return [[e.key, sha256_file(e.scenario.file), e.scenario.parameters] for e in episodes]


def evaluation_folder(cfg: DictConfig, label: str, suite: DictConfig, row: Row, index: int) -> Path:
    agent = sha256_file(row.files[index]) if row.files else row.name
    depends = {"agent": agent, "precision": row.precision, "suite": suite_fingerprint(str(suite.suite)),
               "scoring": SCORING_VERSION,
               **{key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("env", "budget", "expert")}}
    tag = hashlib.sha256(json.dumps(depends, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path(cfg.out) / "evals" / label / f"{row.name}-{index}-{tag}"


def evaluate_row(cfg: DictConfig, label: str, suite: DictConfig, row: Row) -> list[dict]:
    """`results.json` of each training seed's evaluation on `suite`, run (or resumed) by the suite runner."""
    results = []
    for index, agent in enumerate([str(f) for f in row.files] or ["expert"]):
        folder = evaluation_folder(cfg, label, suite, row, index)
        print(f"table: {LABELS[row.name]}, seed {index} ({agent}) on {label}: {folder}")
        eval_cfg = OmegaConf.create({
            "agent": agent, "precision": row.precision, "suite": str(suite.suite), "limit": suite.limit,
            "out": str(folder), **{key: cfg[key] for key in ("env", "budget", "expert")},
        })
        if evaluate.run(eval_cfg) != 0:
            raise TableError(f"evaluating {agent} on {suite.suite} into {folder} failed (see above); rerun to resume")
        results.append({"folder": str(folder), **json.loads((folder / "results.json").read_text())})
    return results


def measure(cfg: DictConfig, rows: list[Row], rig: Rig) -> dict[str, dict[str, Any]]:
    """Batch-1 latency of every policy row, in turns, on cameras of the evaluated env's size; size and energy."""
    policies = {row.name: row.policy for row in rows if row.policy is not None}
    if not policies:
        return {}
    model = next(iter(policies.values())).cfg
    obs = observation(model, rig.image_size_y, rig.image_size_x, np.random.default_rng(0))
    times = latency_ms(policies, obs, int(cfg.latency.warmup), int(cfg.latency.iterations))
    figures = {}
    for row in rows:
        if row.policy is None:
            continue
        footprint, p50 = row.policy.footprint(), float(np.percentile(times[row.name], 50))
        figures[row.name] = {
            "weight_bytes_resident": footprint.weight_bytes,
            # bf16 has no file of its own: the FP32 checkpoint is cast when it loads
            "weight_bytes_disk": row.files[0].stat().st_size if row.precision == "float32" else None,
            "latency_ms_p50": round(p50, 3),
            "latency_ms_p99": round(float(np.percentile(times[row.name], 99)), 3),
            "camera_frames_per_s": round(model.cameras * 1e3 / p50, 1),
            "ternary_macs_per_step": footprint.ternary_macs,
            "float_macs_per_step": footprint.float_macs,
            "float_dtype": footprint.dtype,
            "arithmetic_energy_uj_per_step": round(energy_uj(footprint), 3),
        }
    return {"cameras": f"{model.cameras} x {rig.image_size_y}x{rig.image_size_x}",
            "network_input": f"{model.image_height}x{model.image_width}", "iterations": int(cfg.latency.iterations),
            "threads": torch.get_num_threads(), "rows": figures}


def table(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.suites:
        raise TableError("suites: none configured; give +suites.<label>.suite=<name or file> (conf/table.yaml)")
    suites = {}
    for label, suite in cfg.suites.items():
        if "suite" not in suite:
            raise TableError(f"suites.{label}: no suite; give suites.{label}.suite=<name or file>")
        name, episodes = load_suite(str(suite.suite), suite.get("limit"))
        suites[label] = {"suite": str(suite.suite), "name": name, "limit": suite.get("limit"),
                         "episodes": len(episodes)}
    rig = load_rig(str(cfg.env.rig), image_size_x=cfg.env.image_size_x, image_size_y=cfg.env.image_size_y)
    rows = load_rows(cfg)
    compute = measure(cfg, rows, rig)  # first, with no simulator running beside it
    result: dict[str, Any] = {
        "suites": suites, "budget": OmegaConf.to_container(cfg.budget, resolve=True),
        "env": OmegaConf.to_container(cfg.env, resolve=True), "machine": machine(),
        "compute": {key: value for key, value in compute.items() if key != "rows"},
        "energy_source": ENERGY_SOURCE, "rows": {},
    }
    for row in rows:
        result["rows"][row.name] = {"label": LABELS[row.name], "files": [str(f) for f in row.files],
                                    "precision": row.precision, "suites": {},
                                    "compute": compute.get("rows", {}).get(row.name)}
    for label in suites:
        for row in rows:
            runs = evaluate_row(cfg, label, cfg.suites[label], row)
            figures = {metric: spread([read(r) for r in runs]) for metric, read in METRICS.items()}
            figures["decisions"] = sum(r["budget_stats"]["decisions"] for r in runs)
            figures["episodes"] = [r["episodes_run"] for r in runs]
            figures["evaluations"] = [r["folder"] for r in runs]
            result["rows"][row.name]["suites"][label] = figures
    return result


def run(cfg: DictConfig) -> int:
    try:
        result = table(cfg)
    except (TableError, ScenarioError, RigError) as exc:
        print(f"slimdrive table: {exc}")
        return 2
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    (out / "table.md").write_text(text)
    (out / "table.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + text)
    print(f"wrote {out / 'table.md'} and {out / 'table.json'}; the evaluations are in {out / 'evals'}")
    return 0
