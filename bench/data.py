"""`slimdrive bench data`: what recording a driving log costs, what a step weighs, and how fast it is read back.

collection  `slimdrive collect`'s own `Collector` (the agent, the expert's labels, the budget, the `Recorder`
            encoding eight JPEGs a step, the commit) drives episodes of a suite on its own embedded simulator.
            Every `round` steps, an observer runs `round` steps of `slimdrive bench sim`'s raw client loop
            (tick + every image, no agent, no recording) on a second simulator with the same rig, timed apart:
            the two take turns, so a change of machine load touches both alike, and their ratio is the cost
            of collecting over the bare simulator.
storage     bytes per step of the episodes just written, and the same frames in other encodings (one JPEG per
            camera, one PNG mosaic, raw bytes with zstd) with their decode time: why a step is one JPEG mosaic.
reading     `DrivingLogDataset` through `make_loader` at the model's resolution, with 0 and 2 workers, random
            access over those episodes (or over `data=DIR`).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import RandomSampler

from envs.maps import load_network
from envs.rollout import Observer, Step
from envs.server.launch import launch
from training.collect import Collector
from training.logs.reader import DrivingLogDataset, EpisodeReader, make_loader
from training.logs.writer import encode_cameras, read_manifest

from .sim import raw_client_loop, scene_layout

KEPT_FRAMES = 40  # raw camera frames kept for the encoding comparison (one per turn)


class TakeTurns(Observer):
    """After every `round` collection steps, `round` raw-loop steps, timed on their own; the collection's
    per-step time is what passes between two calls of this observer, minus nothing it does itself."""

    def __init__(self, raw_step: Callable[[], None], round_steps: int) -> None:
        self.raw_step, self.round = raw_step, round_steps
        self.collect_s = self.raw_s = 0.0
        self.collect_steps = self.raw_steps = 0
        self.frames: list[np.ndarray] = []
        self._mark: float | None = None

    def on_reset(self, env, obs, info) -> None:
        self._mark = time.perf_counter()  # reset is episode overhead, counted apart by the caller

    def on_step(self, env, step: Step) -> None:
        now = time.perf_counter()
        self.collect_s += now - self._mark
        self.collect_steps += 1
        if self.collect_steps % self.round == 0:
            if len(self.frames) < KEPT_FRAMES:
                self.frames.append(np.array(step.obs["cameras"]))
            for _ in range(self.round):
                self.raw_step()
            self.raw_steps += self.round
            self.raw_s += time.perf_counter() - now
        self._mark = time.perf_counter()


def time_collection(cfg: DictConfig, out: Path) -> tuple[dict, list[np.ndarray]]:
    """Collect `cfg.collect.limit` episodes into `out`, taking turns with the raw loop; the figures and frames."""
    collect_cfg = OmegaConf.merge(cfg.collect, {"out": str(out)})
    collector = Collector(collect_cfg)
    rig = collector.env.rig
    scene = cfg.scene
    layout = scene_layout(load_network(scene.map), int(scene.vehicles), int(scene.walkers), int(scene.seed))
    episodes = range(min(int(collect_cfg.limit), len(collector.episodes)))
    try:
        with launch(str(scene.map)) as raw_server, \
                raw_client_loop(raw_server.host, raw_server.port, rig, layout) as raw_step:
            turns = TakeTurns(raw_step, int(cfg.round))
            began = time.perf_counter()
            records = [collector.collect(i, observers=[turns]) for i in episodes]
            total_s = time.perf_counter() - began - turns.raw_s
    finally:
        collector.close()
    steps = turns.collect_steps
    loop_step_s, raw_step_s = turns.collect_s / steps, turns.raw_s / max(turns.raw_steps, 1)
    return {
        "suite": str(collect_cfg.suite), "agent": str(collect_cfg.agent), "episodes": len(records),
        "rig": rig.name, "cameras": len(rig.cameras), "image": f"{rig.image_size_x}x{rig.image_size_y}",
        "raw_scene": f"{scene.map}, {scene.vehicles} vehicles, {scene.walkers} walkers (bench sim)",
        "steps": steps, "raw_steps": turns.raw_steps,
        "collect_steps_per_s": 1.0 / loop_step_s,
        "collect_steps_per_s_with_reset_and_commit": steps / total_s,
        "raw_steps_per_s": 1.0 / raw_step_s,
        "collect_overhead_pct": 100.0 * (loop_step_s - raw_step_s) / raw_step_s,
        "collect_overhead_pct_with_reset_and_commit": 100.0 * (total_s / steps - raw_step_s) / raw_step_s,
    }, turns.frames


def _per_step(encode: Callable[[np.ndarray], list[bytes]], decode: Callable[[bytes], object],
              frames: list[np.ndarray]) -> tuple[float, float]:
    """(bytes, decode microseconds) per step of an encoding, averaged over `frames`."""
    blobs = [encode(f) for f in frames]
    began = time.perf_counter()
    for parts in blobs:
        for blob in parts:
            decode(blob)
    seconds = time.perf_counter() - began
    return sum(len(b) for parts in blobs for b in parts) / len(frames), 1e6 * seconds / len(frames)


def encoding_figures(frames: list[np.ndarray], quality: int) -> dict[str, dict[str, float]]:
    """Bytes and decode time per step of the same camera frames in the encodings a log could use."""
    imdecode = lambda blob: cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)  # noqa: E731

    def mosaic(cams: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(cams).reshape(-1, cams.shape[2], 3)

    raw_size = frames[0].nbytes
    choices = {
        f"one JPEG mosaic q{quality} (the format)": (lambda c: [encode_cameras(c, quality)], imdecode),
        f"one JPEG per camera q{quality}": (lambda c: [encode_cameras(cam[None], quality) for cam in c], imdecode),
        "one PNG mosaic": (lambda c: [cv2.imencode(".png", mosaic(c))[1].tobytes()], imdecode),
        "raw RGB, zstd": (lambda c: [pa.compress(mosaic(c).tobytes(), codec="zstd", asbytes=True)],
                          lambda blob: pa.decompress(blob, decompressed_size=raw_size, codec="zstd")),
    }
    out = {}
    for name, (encode, decode) in choices.items():
        size, micros = _per_step(encode, decode, frames)
        out[name] = {"bytes_per_step": size, "decode_us_per_step": micros}
    return out


def loader_rate(dataset: DrivingLogDataset, workers: int, samples: int, batch_size: int, seed: int) -> float:
    """Samples/s of random access through `make_loader`, after the first batch (workers started, files open)."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=samples,
                            generator=torch.Generator().manual_seed(seed))
    batches = iter(make_loader(dataset, batch_size, sampler=sampler, workers=workers))
    next(batches)
    began, n = time.perf_counter(), 0
    for batch in batches:
        n += len(batch["cameras"])
    return n / (time.perf_counter() - began)


def _print(figures: dict) -> None:
    c, s, r = figures["collection"], figures["storage"], figures["reading"]
    print(f"bench data: {c['episodes']} episode(s) of {c['suite']} by {c['agent']}, {c['steps']} steps, rig {c['rig']} "
          f"({c['cameras']} x {c['image']})")
    print(f"  collection {c['collect_steps_per_s']:.1f} steps/s per worker "
          f"({c['collect_steps_per_s_with_reset_and_commit']:.1f} with reset and commit) against the bare "
          f"simulator's {c['raw_steps_per_s']:.1f} ({c['raw_scene']}), taking turns: collecting costs "
          f"{c['collect_overhead_pct']:+.1f} % "
          f"({c['collect_overhead_pct_with_reset_and_commit']:+.1f} %; goal <= 25 %)")
    print(f"  storage {s['bytes_per_step']:,.0f} bytes/step ({s['bytes_per_step'] / 1024:.1f} KB; goal <= 40 KB)")
    for name, e in s["encodings"].items():
        print(f"    {name:<34} {e['bytes_per_step'] / 1024:7.1f} KB/step, "
              f"decode {e['decode_us_per_step']:7.0f} us/step")
    for workers, rate in r["samples_per_s"].items():
        print(f"  reading {rate:,.0f} samples/s at {r['model']}, {workers} worker(s), random access over "
              f"{r['steps']} steps (goal >= 2,000)")


def run(cfg: DictConfig) -> int:
    # torch's OpenMP threads spinning between batches starve OpenCV on 2 cores (measured 150 against 1,250
    # samples/s with workers=0), so this process runs torch and OpenCV on one thread each
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="slimdrive-bench-data-") as tmp:
        logs = Path(str(cfg.collect.out)) if cfg.collect.get("out") else Path(tmp)
        collection, frames = time_collection(cfg, logs)
        entries = list(read_manifest(logs).entries.values())
        quality = EpisodeReader(logs, entries[0], checksum=False).layout["jpeg_quality"]
        storage = {"bytes_per_step": sum(e["bytes"] for e in entries) / sum(e["steps"] for e in entries),
                   "encodings": encoding_figures(frames, quality)}
        source = Path(str(cfg.data)) if cfg.get("data") else logs
        size = (int(cfg.image_height), int(cfg.image_width))
        dataset = DrivingLogDataset(source, "all", image_size=size)
        rates = {str(w): loader_rate(dataset, int(w), int(cfg.samples), int(cfg.batch_size), int(cfg.seed))
                 for w in cfg.workers}
    figures = {"collection": collection, "storage": storage,
               "reading": {"data": str(source) if cfg.get("data") else "the episodes collected above",
                           "steps": len(dataset), "model": f"{size[1]}x{size[0]}", "batch_size": int(cfg.batch_size),
                           "samples_per_s": rates},
               "load_average_1min": os.getloadavg()[0]}
    _print(figures)
    if cfg.get("out"):
        Path(str(cfg.out)).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {Path(str(cfg.out)).resolve()}")
    return 0
