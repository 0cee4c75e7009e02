"""`slimdrive scenario preview path=FILE seed=N`: drive one scenario with an agent (the expert by default)
through the rollout loop and write `<out>/<name>-<seed>.png` (the env's render: camera mosaic + bird's-eye
view, at the first trigger) and `<name>-<seed>.mp4` of the drive.
"""
from __future__ import annotations

from pathlib import Path

import cv2
from omegaconf import DictConfig

from agent.registry import make_agent
from envs.budget import ComputeBudget
from envs.driving_env import DrivingEnv
from envs.rollout import Observer, Step, rollout
from scenarios.compile import load_scenario
from scenarios.errors import ScenarioError
from scenarios.suites import Episode

from .video import Mp4


class Video(Observer):
    """Writes every step's `env.render()` to an MP4, and one PNG: at the scenario's first trigger, or the last
    frame when nothing triggers."""

    def __init__(self, stem: Path, run_trigger) -> None:
        self.stem, self.trigger_frame = stem, run_trigger
        self.video, self.frame, self.picture = None, None, False

    def on_step(self, env: DrivingEnv, step: Step) -> None:
        self.frame = cv2.cvtColor(env.render(), cv2.COLOR_RGB2BGR)
        if self.video is None:
            self.video = Mp4(self.stem.with_suffix(".mp4"), env.metadata["render_fps"])
        self.video.write(self.frame)
        if not self.picture and self.trigger_frame() is not None:
            cv2.imwrite(str(self.stem.with_suffix(".png")), self.frame)
            self.picture = True

    def on_end(self, env: DrivingEnv, record: dict) -> None:
        self.close()
        if not self.picture and self.frame is not None:
            cv2.imwrite(str(self.stem.with_suffix(".png")), self.frame)

    def close(self) -> None:
        if self.video is not None:
            self.video.close()


def run(cfg: DictConfig) -> int:
    try:
        spec = load_scenario(cfg.path)
    except ScenarioError as exc:
        print(f"error {exc}")
        return 1
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{spec.scenario.name}-{cfg.seed}"
    env = DrivingEnv(cfg.env, render_mode="rgb_array")
    agent = make_agent(str(cfg.agent), env, cfg)
    budget = ComputeBudget.for_env(cfg.budget, env)
    budget.check(agent.footprint())
    video = Video(stem, lambda: env.unwrapped.privileged.scenario.trigger_frame)
    try:
        record = rollout(env, agent, budget, Episode(spec, int(cfg.seed)), observers=[video],
                         max_steps=int(cfg.max_steps))
    finally:
        video.close()
        env.close()
    print(f"{spec.scenario.name} seed {cfg.seed}: {record['done']}, route completion "
          f"{record['route_completion']:.1f} %, infractions {[i['kind'] for i in record['infractions']] or 'none'}")
    print(f"wrote {stem.with_suffix('.png')} and {stem.with_suffix('.mp4')}")
    return 0
