"""An MP4 per evaluated episode (`<out>/videos/<scenario>-seed<seed>.mp4`, OpenCV's mp4v): one frame per step,
the rig's cameras beside a bird's-eye view (`envs.birdseye`) with the route and the agent's predicted waypoints
drawn on, and two caption lines: time, speed, command, route completion, infractions so far, and the budget's
state (the agent answered, was busy, missed its deadline, or the fallback braked).

`slimdrive eval videos=failed` (the default) keeps the videos of episodes that did not succeed (Bench2Drive's
success: route completed without infractions), `videos=all` every one, `videos=none` none, and a list of
episode keys those (quoted: Hydra's grammar takes no bare `#`; `'videos=["cut_in#0","jaywalker#3"]'`).
Whether an episode fails is known only at its end, so the video is written while it drives under a temporary
name and then kept (renamed) or deleted.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from envs.birdseye import birdseye_view, mosaic
from envs.budget import ComputeBudget
from envs.driving_env import DrivingEnv
from envs.rollout import Observer, Step
from scenarios.route import RoadOption

from .traces import episode_stem

VIDEOS = "videos"
BEV_METRES = 60.0  # the bird's-eye view's side, as envs.birdseye draws it by default
WAYPOINT = (255, 60, 200)  # RGB: the agent's predicted path
MIN_WIDTH = 640  # pixels: two caption lines fit


class Mp4:
    """An MP4 written frame by frame (OpenCV's mp4v), opened at the size of its first frame. Every video slimdrive
    writes goes through this class: eval's episodes, `scenario preview`, `dataset view`."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), float(fps)
        self.writer: cv2.VideoWriter | None = None

    def write(self, bgr: np.ndarray) -> None:
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (bgr.shape[1], bgr.shape[0]))
            if not self.writer.isOpened():
                raise OSError(f"OpenCV cannot write {self.path} (mp4v): check the folder exists and is writable")
        self.writer.write(bgr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def wanted_videos(setting) -> Callable[[dict], bool]:
    """Which finished episode records keep their video, from the `videos` setting (see the module doc)."""
    modes = {"failed": lambda r: not r["success"], "all": lambda r: True, "none": lambda r: False}
    if isinstance(setting, str) and setting in modes:
        return modes[setting]
    if not isinstance(setting, str | int | float | bool | None):  # a list of keys (a ListConfig from Hydra)
        keys = {str(k) for k in setting}
        return lambda r: f"{r['scenario']}#{r['seed']}" in keys
    raise ValueError(f"videos={setting!r}: expected failed, all, none or a list of episode keys "
                     "(scenario#seed) (conf/eval.yaml)")


def predicted_waypoints(agent) -> np.ndarray | None:
    """The agent's latest predicted path in the ego frame (metres, x forward, y right), if it exposes one: the
    expert's `plan.waypoints`, or a policy's `waypoints`."""
    plan = getattr(agent, "plan", None)
    points = getattr(plan, "waypoints", None) if plan is not None else getattr(agent, "waypoints", None)
    return None if points is None else np.asarray(points, np.float64).reshape(-1, 2)


class EpisodeVideo(Observer):
    def __init__(self, folder: Path, agent, budget: ComputeBudget, keep: Callable[[dict], bool]) -> None:
        self.folder, self.agent, self.budget, self.keep = Path(folder), agent, budget, keep
        self.video: Mp4 | None = None

    def on_reset(self, env: DrivingEnv, obs, info) -> None:
        run = env.unwrapped.privileged.scenario
        self.folder.mkdir(parents=True, exist_ok=True)
        self.final = self.folder / f"{episode_stem(run.name, run.seed)}.mp4"
        self.partial = self.final.with_name(f".{self.final.stem}.partial.mp4")
        self.close()
        self.video, self.frames, self.last = Mp4(self.partial, env.metadata["render_fps"]), 0, (0, 0)

    def on_step(self, env: DrivingEnv, step: Step) -> None:
        if step.info["failure"]:
            return  # that world is gone; the episode is retried (and its video written again)
        self.video.write(cv2.cvtColor(self.frame(env, step), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def frame(self, env: DrivingEnv, step: Step) -> np.ndarray:
        """The step's picture (RGB): cameras, bird's-eye view with route and predicted path, captions."""
        priv = env.unwrapped.privileged
        cameras = step.next_obs["cameras"]
        columns = math.ceil(len(cameras) / 2)
        # small rigs (a 64x32 camera) are enlarged so that the captions fit and the bird's-eye view is legible
        zoom = max(1, math.ceil(MIN_WIDTH / (columns * cameras.shape[2] + cameras.shape[1])))
        if zoom > 1:
            cameras = cameras.repeat(zoom, axis=1).repeat(zoom, axis=2)
        side = math.ceil(len(cameras) / columns) * cameras.shape[1]
        bev = birdseye_view(priv.world, priv.ego, size=side, metres=BEV_METRES, route=priv.route)
        points = predicted_waypoints(self.agent)
        if points is not None and len(points):
            scale = side / BEV_METRES  # ego at the centre heading up: forward is up, right is right
            pixels = np.stack([side / 2 + points[:, 1] * scale, side / 2 - points[:, 0] * scale], 1)
            for x, y in np.round(pixels).astype(int):
                cv2.circle(bev, (int(x), int(y)), 2, WAYPOINT, -1, cv2.LINE_AA)
        picture = mosaic(cameras, env.unwrapped.rig.names, bev, columns)
        return np.concatenate([picture, self.captions(step, picture.shape[1])], axis=0)

    def captions(self, step: Step, width: int) -> np.ndarray:
        info, stats = step.info, self.budget.stats
        missed, fallback = stats.missed_deadlines, stats.fallback_steps
        state = ("FALLBACK (brake)" if fallback > self.last[1] else "MISSED deadline" if missed > self.last[0]
                 else "answered" if step.decision is not None else "busy (previous control)")
        self.last = (missed, fallback)
        infractions = info["infractions"]
        lines = [
            f"t {info['sim_time']:5.1f} s  {info['ego_speed'] * 3.6:5.1f} km/h  "
            f"{RoadOption(int(step.next_obs['command'])).name}  "
            f"route {info['route_completion']:5.1f} %",
            f"infractions {len(infractions)}{' (' + infractions[-1]['kind'] + ')' if infractions else ''}  "
            f"budget: {state}, missed {missed}, fallback {fallback}",
        ]
        bar = np.full((36, width, 3), 20, np.uint8)
        for row, text in enumerate(lines):
            colour = (255, 120, 120) if row == 1 and (infractions or fallback) else (230, 230, 230)
            cv2.putText(bar, text, (4, 14 + 16 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
        return bar

    def on_end(self, env: DrivingEnv, record: dict) -> None:
        self.close()
        if self.frames and self.keep(record):
            os.replace(self.partial, self.final)
            record["video"] = f"{VIDEOS}/{self.final.name}"
        else:
            self.partial.unlink(missing_ok=True)
            self.final.unlink(missing_ok=True)  # an earlier attempt's or run's video of this episode
            record["video"] = None

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
