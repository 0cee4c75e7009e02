"""`slimdrive dagger base=runs/train/bitnet_small-ternary-s0`: DAgger with the privileged expert as the teacher.

Behaviour cloning learns only the states the expert visits; the policy's own small errors take it to states the
expert never showed it, where it errs more (compounding error). DAgger (Ross, Gordon and Bagnell, "A Reduction
of Imitation Learning and Structured Prediction to No-Regret Online Learning", AISTATS 2011) lets the learner
drive and asks the expert what it would have done in every state the learner visited; those labelled states
join the data and the learner is trained again. Each round here:

1. **drive and label**: the current policy (its packed file for a ternary run: the runtime that ships) drives a
   fresh random subset of the `suite`'s episodes through the one rollout loop under the compute budget
   (`training.collect`, so the logs have the same format as expert data); the expert labels every step;
2. **fine-tune**: training resumes from the previous round's weights on all data so far; steps where the
   policy and the expert disagreed are drawn `critical_weight` times more often (DA-RB, Prakash et al.,
   "Exploring Data Aggregation in Policy Learning for Vision-based Urban Autonomous Driving", CVPR 2020);
3. **score**: the new policy drives a fixed subset of `val_suite` with `slimdrive eval`'s suite runner under
   `slimdrive eval`'s defaults (its budget, not collection's; `score`); round 0
   scores the behaviour-cloning start, so `dagger.json` and TensorBoard (`val/driving_score`) show whether the
   rounds help.

Outputs in `out/round-<r>/`: `suite.yaml` (the episodes driven), `data/` (the labelled logs), `train/` (a
`slimdrive train` run folder) and `val/` (a `slimdrive eval` folder); `out/dagger.json` holds the curve. Every
step resumes on its own (collection skips committed episodes, training resumes from its checkpoint, evaluation
from its episodes file), so rerunning the command continues where it stopped.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from envs.config import compose
from evaluation import evaluate
from scenarios.errors import ScenarioError
from scenarios.suites import load_suite, suite_path
from training import collect
from training.train import CheckpointError, train


class DaggerError(RuntimeError):
    """A round that cannot go on; the message names what failed and what to do."""


def policy_file(run: Path) -> Path:
    """What drives for a `slimdrive train` run: the packed ternary export if there is one, else the float weights."""
    packed = run / "policy.safetensors"
    return packed if packed.is_file() else run / "model.safetensors"


def write_subset_suite(source: str, episodes: int, seed: int, path: Path, name: str) -> Path:
    """Write a suite file holding `episodes` episodes (scenario x seed) of the suite `source`, drawn without
    replacement by `seed` (all of them when `episodes` is 0). Scenario paths become absolute, so the file can
    live anywhere, and a round's episodes stay on disk beside its data."""
    load_suite(source)  # validated first: a malformed suite is refused naming its file, line and field
    source_path = suite_path(source)
    suite = yaml.safe_load(source_path.read_text())
    pairs = [(i, s) for i, entry in enumerate(suite["entries"]) for s in entry["seeds"]]
    if episodes and episodes < len(pairs):
        chosen = np.random.default_rng(seed).choice(len(pairs), episodes, replace=False)
        pairs = [pairs[j] for j in sorted(chosen)]
    entries = []
    for i, entry in enumerate(suite["entries"]):
        seeds = [s for j, s in pairs if j == i]
        if seeds:
            scenario = str((source_path.parent / entry["scenario"]).resolve())
            entries.append({**entry, "scenario": scenario, "seeds": seeds})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"name": name, "description": f"{len(pairs)} episodes of {source_path.name}",
                                    "entries": entries}, sort_keys=False))
    return path


def score(cfg: DictConfig, run: Path, suite: Path, out: Path) -> dict:
    """Closed-loop results of the policy of `run` on `suite`, by the suite runner of `slimdrive eval`, under
    `slimdrive eval`'s own defaults (conf/eval.yaml: its compute budget, retries, precision), so that a round's
    driving score is the number a user would measure. Only what DAgger decides is set over them: the policy,
    the suite and folder, the simulators in parallel (`collect_workers`, as for the rounds' rollouts: DAgger's
    `workers` is the DataLoader's, as in `slimdrive train`), where they run (`executor`, `ray`), no videos, and
    the env the policy drove in for its data (by default eval's own: env/default at 128x64), since a policy is
    scored on the cameras it was trained from."""
    eval_cfg = OmegaConf.merge(compose("eval"), {
        "agent": str(policy_file(run)), "suite": str(suite), "out": str(out), "limit": None,
        "workers": int(cfg.collect_workers), "executor": cfg.executor, "ray": cfg.ray, "videos": "none",
        "env": cfg.env})
    if evaluate.run(eval_cfg) != 0:
        raise DaggerError(f"evaluating {policy_file(run)} on {suite} failed (see above); rerun to resume")
    return json.loads((out / "results.json").read_text())


def dagger(cfg: DictConfig) -> Path:
    base = Path(str(cfg.base))
    if not (base / "model.safetensors").is_file():
        raise DaggerError(f"base={base}: no model.safetensors; pass a finished `slimdrive train` run folder")
    out = Path(cfg.out or f"runs/dagger/{base.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    curve_file = out / "dagger.json"
    curve = json.loads(curve_file.read_text()) if curve_file.exists() else []
    val_suite = write_subset_suite(str(cfg.val_suite), int(cfg.val_episodes), int(cfg.seed), out / "val_suite.yaml",
                                   f"{cfg.val_suite}-dagger")
    writer = SummaryWriter(str(out / "tensorboard"))

    def record(round_: int, run: Path, extra: dict) -> None:
        if any(point["round"] == round_ for point in curve):
            return
        results = score(cfg, run, val_suite, out / f"round-{round_}" / "val")
        point = {"round": round_, "policy": str(policy_file(run)), "driving_score": results["driving_score"],
                 "route_completion": results["route_completion"], "success_rate": results["success_rate"], **extra}
        curve.append(point)
        curve_file.write_text(json.dumps(curve, indent=2))
        for key in ("driving_score", "route_completion", "success_rate"):
            writer.add_scalar(f"val/{key}", point[key], round_)
        writer.flush()
        print(f"round {round_}: val driving score {point['driving_score']:.2f}, route completion "
              f"{point['route_completion']:.2f}, success {point['success_rate']:.2f}")

    data = [str(cfg.data)] if isinstance(cfg.data, str) else [str(d) for d in cfg.data]
    record(0, base, {"data": list(data)})
    # Fine-tuning starts from trained weights: the recipe's learning rates, scaled down.
    recipe = OmegaConf.to_container(cfg.recipe)
    for stages in recipe.values():
        for key in ("peak_lr", "stage_one_end_lr", "stage_two_lr"):
            if key in stages:
                stages[key] *= float(cfg.round_lr_scale)
    previous = base
    for round_ in range(1, int(cfg.rounds) + 1):
        folder = out / f"round-{round_}"
        suite = write_subset_suite(str(cfg.suite), int(cfg.episodes_per_round), int(cfg.seed) * 1000 + round_,
                                   folder / "suite.yaml", f"dagger-round-{round_}")
        print(f"round {round_}: {policy_file(previous)} drives {suite}, the expert labels")
        collect_cfg = OmegaConf.merge(cfg, {"agent": str(policy_file(previous)), "suite": str(suite),
                                            "out": str(folder / "data"), "limit": None,
                                            "workers": int(cfg.collect_workers), "noise": {"share": 0.0}})
        if collect.run(collect_cfg) != 0:
            raise DaggerError(f"round {round_}: collection into {folder / 'data'} failed (see above); rerun to resume")
        data.append(str(folder / "data"))
        train_cfg = OmegaConf.merge(cfg, {"data": data, "out": str(folder / "train"), "epochs": int(cfg.round_epochs),
                                          "samples_per_epoch": int(cfg.round_samples), "recipe": recipe})
        previous = train(train_cfg, init=previous / "model.safetensors")
        record(round_, previous, {"data": list(data)})
    writer.close()
    print(f"wrote {curve_file} (val driving score per round), the rounds' data, runs and evaluations in {out}, "
          f"TensorBoard logs in {out / 'tensorboard'}; the last policy is {policy_file(previous)}")
    return out


def run(cfg: DictConfig) -> int:
    try:
        dagger(cfg)
    except (DaggerError, CheckpointError, ScenarioError, ValueError, FileNotFoundError) as exc:
        print(f"slimdrive dagger: {exc}")
        return 2
    return 0
