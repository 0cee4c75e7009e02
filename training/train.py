"""`slimdrive train data=data/train model=bitnet_small`: behaviour cloning from recorded driving logs.

One file, read top to bottom (CleanRL style): configuration and device, data, network, optimiser and the
learning-rate recipe, resume, the loop (augment, losses, step, log, checkpoint), validation, export.

* Data: `training.logs.DrivingLogDataset`, split by episode (train / val), images decoded and resized to the
  network's input once, into the decoded-frame cache (`frame_cache`); each epoch draws a seeded, balanced order
  (commands, scenarios, braking) so that a resumed run sees exactly the batches an uninterrupted one would.
* Losses: L1 on the waypoints (metres, ego frame), L1 on the target speed, L1 on the auxiliary current speed
  from the images (against the inertia problem), BCE on the brake logit (the expert brakes for a hazard or a
  light). Optional distillation from a full-precision teacher checkpoint (`teacher=path`): L1 to its
  waypoints and target speed, BCE to its brake probability.
* Recipe: ternary (BitNet b1.58, "The Era of 1-bit LLMs: Training Tips"): peak learning rate several times the
  full-precision one, Adam (0.9, 0.95), two stages: the first with weight decay 0.1 and a linear decay from the
  peak, then the rate drops and decays to zero with weight decay 0. `quant=none`: warm-up, cosine decay, weight
  decay 0.01. Both in `conf/train.yaml`.
* Augmentation: one brightness and contrast change per sample, the same for all eight cameras (the views of one
  moment share their light), so the network cannot tell cameras apart by exposure.
* Outputs in `out/`: `config.yaml` (resolved), TensorBoard events (losses, learning rate, weight sparsity per
  ternary layer, samples/s), `checkpoint/` (model as a `slimdrive-checkpoint` safetensors file, optimiser
  state as safetensors, `state.json`; written to a temporary folder and renamed), `model.safetensors` (the
  float weights at the end) and `policy.safetensors` (the packed ternary export). Rerun to resume exactly.
* Distributed: under `torchrun --nproc_per_node N -m slimdrive train ...` each process trains on its slice of
  every global batch (`batch_size` stays the global batch: the same epoch order, sharded), gradients are averaged
  by DistributedDataParallel (gloo on the CPU, nccl on CUDA), and only rank 0 validates and writes (config,
  TensorBoard, checkpoints, exports). The result equals one process's up to the summation order of the gradient
  average (tests/training/test_distributed.py states the tolerance).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agent.bitlinear import BitLinear, weight_quant
from agent.export import WeightFileError, export_packed, load_checkpoint, save_checkpoint
from agent.model import DrivingNet, ModelConfig
from training.logs.reader import DrivingLogDataset, balanced_weights, make_loader

STATE_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot resume this run; the message names the file and the fix."""


# ----------------------------------------------------------------------------------------------- data
def datasets(cfg: DictConfig, model_cfg: ModelConfig) -> tuple[Dataset, Dataset, np.ndarray]:
    """(train set, val set, per-sample weights for the train order) from every folder in `cfg.data`."""
    roots = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)
    size = (model_cfg.image_height, model_cfg.image_width)
    parts = {split: [DrivingLogDataset(root, split, image_size=size, val_fraction=float(cfg.val_fraction),
                                       split_seed=int(cfg.split_seed), frame_cache=bool(cfg.frame_cache),
                                       cache_workers=int(cfg.workers)) for root in roots]
             for split in ("train", "val")}
    for part in parts["train"] + parts["val"]:
        if len(part) and part.waypoints_k != model_cfg.waypoints:
            raise ValueError(f"data {part.root}: the logs have {part.waypoints_k} waypoints per step, the model "
                             f"predicts {model_cfg.waypoints}; set model.net.waypoints={part.waypoints_k}")
    train = torch.utils.data.ConcatDataset(parts["train"])
    val = torch.utils.data.ConcatDataset(parts["val"])
    if len(train) == 0:
        raise ValueError(f"data {roots}: no training steps (is the folder a collected dataset? `slimdrive dataset "
                         "info data=...`)")
    return train, val, np.concatenate([sample_weights(p, cfg) for p in parts["train"]])


def sample_weights(dataset: DrivingLogDataset, cfg: DictConfig) -> np.ndarray:
    """Drawing weights: balanced over commands, scenarios and braking (`balanced_weights`), times
    `critical_weight` for critical steps, where the driver and the expert disagreed (DAgger data: DA-RB's
    critical states, Prakash et al. 2020). Noise-injected steps disagree on purpose and are not critical."""
    labels = dataset.labels
    weights = balanced_weights(dataset)
    disagree = (np.abs(labels["control"][:, 0] - labels["expert"][:, 0]) > 0.1) | \
               (np.abs(labels["control"][:, 2] - labels["expert"][:, 2]) > 0.2)
    perturbed = labels["perturbed"].astype(bool)
    weights *= np.where(disagree & ~perturbed, float(cfg.critical_weight), 1.0)
    if not cfg.use_perturbed:
        weights *= ~perturbed
    return weights / weights.sum()


class EpochOrder(Sampler):
    """The epoch's sample order, drawn with replacement from `weights` by a generator seeded with (seed, epoch),
    starting at `start`: a resumed run continues with exactly the indices an uninterrupted one would draw.

    Sharded (`world` > 1, under torchrun): every rank draws the same order and keeps its `rank`-th slice of each
    global batch of `batch_size`, so the ranks' batches of a step together are one process's batch of that step;
    `start` still counts samples of the whole (unsharded) order, a multiple of `batch_size`."""

    def __init__(self, weights: np.ndarray, samples: int, seed: int, epoch: int, start: int = 0,
                 batch_size: int = 1, rank: int = 0, world: int = 1) -> None:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        self.order = torch.multinomial(torch.as_tensor(weights), samples, replacement=True, generator=generator)
        self.start = start
        if world > 1:
            local = batch_size // world
            batches = self.order[: samples // batch_size * batch_size].view(-1, batch_size)
            self.order = batches[:, rank * local:(rank + 1) * local].reshape(-1)
            self.start = start // batch_size * local

    def __iter__(self):
        return iter(self.order[self.start:].tolist())

    def __len__(self) -> int:
        return len(self.order) - self.start


def augment(cameras: torch.Tensor, generator: torch.Generator, strength: float,
            shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """uint8 (B, cams, H, W, 3) -> float pixels in [0, 255] with one brightness and contrast change per sample,
    shared by its cameras. `shard` = (rank, world): the batch is that slice of a global batch of B x world
    (torchrun); the changes are drawn for the global batch and sliced, so every sample gets the change it would
    get in one process."""
    rank, world = shard
    batch = cameras.shape[0]
    rows = slice(rank * batch, (rank + 1) * batch)
    gain = 1.0 + strength * (torch.rand(batch * world, 1, 1, 1, 1, generator=generator)[rows] * 2 - 1)
    offset = 40.0 * strength * (torch.rand(batch * world, 1, 1, 1, 1, generator=generator)[rows] * 2 - 1)
    x = cameras.float()
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    return ((x - mean) * gain + mean + offset).clamp(0.0, 255.0).round().to(torch.uint8)


# --------------------------------------------------------------------------------------------- losses
def losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: DictConfig,
           teacher_out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every loss term, weighted, and their sum under "total"."""
    w = cfg.loss
    terms = {
        "waypoints": w.waypoints * F.l1_loss(out["waypoints"], batch["waypoints"]),
        "target_speed": w.target_speed * F.l1_loss(out["target_speed"], batch["target_speed"]),
        "speed": w.speed * F.l1_loss(out["speed"], batch["speed"].squeeze(-1)),
        "brake": w.brake * F.binary_cross_entropy_with_logits(out["brake"], batch["brake"].float()),
    }
    if teacher_out is not None:
        terms["distill"] = w.distill * (
            F.l1_loss(out["waypoints"], teacher_out["waypoints"])
            + F.l1_loss(out["target_speed"], teacher_out["target_speed"])
            + F.binary_cross_entropy_with_logits(out["brake"], torch.sigmoid(teacher_out["brake"])))
    terms["total"] = sum(terms.values())
    return terms


# --------------------------------------------------------------------------------------------- recipe
def schedule(step: int, total: int, cfg: DictConfig, quant: str) -> tuple[float, float]:
    """(learning rate, weight decay) at `step` of `total`."""
    r = cfg.recipe[quant]
    warmup = max(int(r.warmup_fraction * total), 1)
    if step < warmup:
        return r.peak_lr * (step + 1) / warmup, r.weight_decay
    if quant == "ternary":  # two stages (BitNet b1.58): decay, then a lower rate to zero without weight decay
        split = int(r.stage_two_at * total)
        if step < split:
            t = (step - warmup) / max(split - warmup, 1)
            return r.peak_lr + t * (r.stage_one_end_lr - r.peak_lr), r.weight_decay
        t = (step - split) / max(total - split, 1)
        return r.stage_two_lr * (1.0 - t), 0.0
    t = (step - warmup) / max(total - warmup, 1)
    return 0.5 * r.peak_lr * (1.0 + math.cos(math.pi * t)), r.weight_decay


def parameter_groups(net: DrivingNet) -> list[dict]:
    """Weight decay on matrices (projections, heads), none on gains, embeddings and biases."""
    decay, plain = [], []
    for name, p in net.named_parameters():
        (decay if p.ndim == 2 and "position" not in name and "camera" not in name else plain).append(p)
    return [{"params": decay, "decay": True}, {"params": plain, "decay": False}]


def ternary_sparsity(net: DrivingNet) -> dict[str, float]:
    """Share of zero codes in each ternary layer's weights (BitNet's feature filtering)."""
    return {name: float((weight_quant(m.weight.detach())[0] == 0).float().mean())
            for name, m in net.named_modules() if isinstance(m, BitLinear) and m.quant == "ternary"}


# ------------------------------------------------------------------------------------------ checkpoints
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_state(folder: Path, net: DrivingNet, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Model, optimiser and loop state into `folder`, atomically: a temporary folder, then a rename."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_checkpoint(net, tmp / "model.safetensors")
    tensors = {"rng.torch": torch.get_rng_state()}
    for param_id, param_state in optimizer.state_dict()["state"].items():
        for key, value in param_state.items():  # a 0-d tensor (Adam's step) is stored with shape (1,)
            tensor = value.detach().clone()
            tensors[f"adam.{param_id}.{key}"] = tensor.reshape(-1) if tensor.ndim == 0 else tensor
    save_file(tensors, tmp / "optimizer.safetensors")
    state = {**state, "version": STATE_VERSION, "optimizer_sha256": _sha256(tmp / "optimizer.safetensors"),
             "param_groups": [{k: v for k, v in g.items() if k != "params"}
                              for g in optimizer.state_dict()["param_groups"]]}
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    for file in tmp.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: Path, net: DrivingNet, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what `save_state` wrote; refuses a checkpoint of another model or one that was altered."""
    state_file = folder / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{state_file}: unreadable ({exc}); delete {folder} to start over") from exc
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{state_file}: state version {state.get('version')}, expected {STATE_VERSION}")
    try:
        saved = load_checkpoint(folder / "model.safetensors")
    except WeightFileError as exc:
        raise CheckpointError(f"{exc}; delete {folder} to start over, or point out= elsewhere") from exc
    if saved.cfg != net.cfg:
        raise CheckpointError(f"{folder / 'model.safetensors'}: a checkpoint of model {saved.cfg}, but this run "
                              f"trains {net.cfg}; use another out= or the same model config")
    optimizer_file = folder / "optimizer.safetensors"
    if not optimizer_file.is_file() or _sha256(optimizer_file) != state.get("optimizer_sha256"):
        raise CheckpointError(f"{optimizer_file}: missing or altered (checksum mismatch); delete {folder} to "
                              "start over")
    net.load_state_dict(saved.state_dict())
    tensors = load_file(optimizer_file)
    optimizer_state = optimizer.state_dict()
    for group in optimizer_state["param_groups"]:
        for param_id in group["params"]:
            keys = [k.split(".", 2)[2] for k in tensors if k.startswith(f"adam.{param_id}.")]
            if keys:
                optimizer_state["state"][param_id] = {k: tensors[f"adam.{param_id}.{k}"].reshape(()) if k == "step"
                                                      else tensors[f"adam.{param_id}.{k}"] for k in keys}
    for group, saved_group in zip(optimizer_state["param_groups"], state["param_groups"]):
        group.update({k: v for k, v in saved_group.items() if k != "params"})
    optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(tensors["rng.torch"])
    return state


# ----------------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(net: DrivingNet, loader: DataLoader, cfg: DictConfig, device: torch.device) -> dict[str, float]:
    """Mean losses on held-out episodes, plus the waypoint error in metres and the brake accuracy."""
    net.eval()
    sums: dict[str, float] = {}
    count = 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = net(batch["cameras"], batch["speed"], batch["target_point"], batch["command"])
        terms = {k: float(v) for k, v in losses(out, batch, cfg).items()}
        terms["waypoint_error_m"] = float((out["waypoints"] - batch["waypoints"]).norm(dim=-1).mean())
        terms["brake_accuracy"] = float(((out["brake"] > 0) == batch["brake"].bool()).float().mean())
        n = len(batch["speed"])
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
    net.train()
    return {k: v / max(count, 1) for k, v in sums.items()}


# ------------------------------------------------------------------------------------------------ run
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name}: no CUDA device here; use device=cpu (or auto)")
    return torch.device(name)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job; rank 0 of 1 without torchrun."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The one process that validates and writes."""
        return self.rank == 0


def join_job(device: torch.device, batch_size: int) -> tuple[Ranks, torch.device]:
    """Under torchrun (WORLD_SIZE > 1) join its process group: nccl when the device is CUDA (each process on its
    LOCAL_RANK's GPU), gloo on the CPU. Without torchrun: one process, the device unchanged."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), device
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is the global batch and must divide among the {world} "
                         f"processes of torchrun; use a multiple of {world}")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), world), device


def train(cfg: DictConfig, init: Path | None = None) -> Path:
    """Train (or resume) the run in `cfg.out`; `init` starts from another run's float weights (DAgger's
    fine-tuning). Returns the output folder. Under torchrun every process calls it; rank 0 writes."""
    ranks, device = join_job(pick_device(str(cfg.device)), int(cfg.batch_size))
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    model_cfg = ModelConfig.from_dict(OmegaConf.to_container(cfg.model.net))
    out = Path(cfg.out or f"runs/train/{cfg.model.name}-{model_cfg.quant}-s{cfg.seed}")
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        job = f", {ranks.world} processes" if ranks.world > 1 else ""
        print(f"training {cfg.model.name} (quant={model_cfg.quant}) on {cfg.data} -> {out} ({device}{job})")

    torch.manual_seed(int(cfg.seed))
    # rank 0 builds the decoded-frame cache first; the others wait and then open what it built
    if not ranks.main:
        dist.barrier()
    train_set, val_set, weights = datasets(cfg, model_cfg)
    if ranks.main and ranks.world > 1:
        dist.barrier()
    samples = int(cfg.samples_per_epoch) or len(train_set)
    batches_per_epoch = samples // int(cfg.batch_size)
    total_steps = batches_per_epoch * int(cfg.epochs)
    every = max(len(val_set) // max(int(cfg.val_samples), 1), 1)  # an even subsample of the held-out steps
    val_loader = make_loader(torch.utils.data.Subset(val_set, range(0, len(val_set), every)),
                             int(cfg.batch_size), workers=int(cfg.workers))

    net = DrivingNet(model_cfg).to(device).train()
    if init is not None:
        net.load_state_dict(load_checkpoint(init).state_dict())
    teacher = load_checkpoint(cfg.teacher).to(device).eval() if cfg.teacher else None
    optimizer = torch.optim.AdamW(parameter_groups(net), lr=0.0, betas=(0.9, 0.95))
    state = {"step": 0, "epoch": 0, "position": 0, "best_val": None}
    checkpoint = out / "checkpoint"
    if checkpoint.exists() and cfg.resume:
        state = load_state(checkpoint, net, optimizer)
        if ranks.main:
            print(f"resuming at step {state['step']} (epoch {state['epoch']}, batch {state['position']})")
    # every rank holds the same weights (same seed, same checkpoint); DDP averages the gradients of the shards
    model = net if ranks.world == 1 else DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None)

    writer = SummaryWriter(str(out / "tensorboard")) if ranks.main else None
    if ranks.main and state["step"] == 0 and "val" not in state and len(val_set):  # the curve starts untrained
        state["val"] = [{"step": 0, **validate(net, val_loader, cfg, device)}]
        for name, value in state["val"][0].items():
            writer.add_scalar(f"val/{name}", value, 0)
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="batch", disable=not ranks.main)
    window_start, window_samples = time.monotonic(), 0
    while state["step"] < total_steps:
        epoch = state["epoch"]
        order = EpochOrder(weights, batches_per_epoch * int(cfg.batch_size), int(cfg.seed), epoch,
                           start=state["position"] * int(cfg.batch_size), batch_size=int(cfg.batch_size),
                           rank=ranks.rank, world=ranks.world)
        loader = make_loader(train_set, int(cfg.batch_size) // ranks.world, sampler=order, workers=int(cfg.workers),
                             drop_last=True)
        for batch in loader:
            step = state["step"]
            lr, weight_decay = schedule(step, total_steps, cfg, model_cfg.quant)
            for group in optimizer.param_groups:
                group["lr"], group["weight_decay"] = lr, weight_decay if group["decay"] else 0.0
            generator = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + step)
            # augmented where the generator lives (the CPU), then moved once
            batch["cameras"] = augment(batch["cameras"], generator, float(cfg.augment), (ranks.rank, ranks.world))
            batch = {k: v.to(device) for k, v in batch.items()}
            out_ = model(batch["cameras"], batch["speed"], batch["target_point"], batch["command"])
            teacher_out = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_out = teacher(batch["cameras"], batch["speed"], batch["target_point"], batch["command"])
            terms = losses(out_, batch, cfg, teacher_out)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), float(cfg.grad_clip))
            optimizer.step()

            state["step"], state["position"] = step + 1, state["position"] + 1
            window_samples += len(batch["speed"]) * ranks.world
            bar.update()
            if state["step"] % int(cfg.log_every) == 0 and ranks.world > 1:  # the global batch's losses
                values = torch.stack([v.detach() for v in terms.values()])
                dist.all_reduce(values)
                terms = dict(zip(terms, values / ranks.world))
            if ranks.main and state["step"] % int(cfg.log_every) == 0:
                rate = window_samples / max(time.monotonic() - window_start, 1e-9)
                window_start, window_samples = time.monotonic(), 0
                for name, value in terms.items():
                    writer.add_scalar(f"train/{name}", value.item(), state["step"])
                writer.add_scalar("train/lr", lr, state["step"])
                writer.add_scalar("train/samples_per_s", rate, state["step"])
                bar.set_postfix(loss=f"{terms['total'].item():.3f}", lr=f"{lr:.2e}", sps=f"{rate:.0f}")
            if ranks.main and (state["step"] % int(cfg.checkpoint_every) == 0 or state["step"] == total_steps):
                save_state(checkpoint, net, optimizer, state)
            if state["step"] >= total_steps:
                break
        if not ranks.main:  # the other ranks only train: their state never reaches a file
            state["epoch"], state["position"] = epoch + 1, 0
        elif state["step"] % batches_per_epoch == 0 or state["step"] >= total_steps:
            metrics = validate(net, val_loader, cfg, device) if len(val_set) else {}
            for name, value in metrics.items():
                writer.add_scalar(f"val/{name}", value, state["step"])
            for name, value in ternary_sparsity(net).items():
                writer.add_scalar(f"sparsity/{name}", value, state["step"])
            if metrics:
                tqdm.write(f"epoch {epoch}: val loss {metrics['total']:.4f}, waypoint error "
                           f"{metrics['waypoint_error_m']:.3f} m, brake accuracy {metrics['brake_accuracy']:.3f}")
                if state["best_val"] is None or metrics["total"] < state["best_val"]:
                    state["best_val"] = metrics["total"]
            state["epoch"], state["position"] = epoch + 1, 0
            state.setdefault("val", []).append({"step": state["step"], **metrics})
            save_state(checkpoint, net, optimizer, state)
    bar.close()
    if not ranks.main:
        return out
    writer.close()

    net.eval()
    save_checkpoint(net, out / "model.safetensors")
    written = [out / "model.safetensors"]
    if model_cfg.quant == "ternary":
        written.append(export_packed(net, out / "policy.safetensors"))
    (out / "summary.json").write_text(json.dumps({"steps": state["step"], "epochs": state["epoch"],
                                                  "val": state.get("val", [])}, indent=2))
    print(f"wrote {', '.join(str(p) for p in written)}, {out / 'summary.json'}, checkpoints in {checkpoint}, "
          f"TensorBoard logs in {out / 'tensorboard'}")
    return out


def run(cfg: DictConfig) -> int:
    try:
        train(cfg)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"slimdrive train: {exc}")
        return 2
    finally:
        if dist.is_initialized():  # torchrun: leave the process group on every path
            dist.destroy_process_group()
    return 0
