"""`slimdrive scenario validate PATH...` and `slimdrive scenario preview PATH seed=N`.

validate: schema and cross-field checks, then compile on the file's map for `seeds` (routes, placements);
one line per file, exit status 1 if any file is bad.
preview: runs the scenario with the expert through DrivingEnv and writes `<out>/<name>-<seed>.png` (the
env's render: camera mosaic + bird's-eye view, at the first trigger) and `<name>-<seed>.mp4` of the drive.
"""
from __future__ import annotations

from pathlib import Path

import cv2
from omegaconf import DictConfig, OmegaConf

from .compile import load_scenario, validate_file
from .errors import ScenarioError


def validate(cfg: DictConfig) -> int:
    paths = [Path(p) for p in cfg.paths]
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    if not files:
        print("slimdrive scenario validate: no files given (paths=[a.yaml,dir/])")
        return 2
    bad = 0
    for file in files:
        try:
            compiled = validate_file(file, tuple(int(s) for s in cfg.seeds))
            note = f"route {compiled[0].route.length:.0f} m, {len(compiled[0].actors)} actors" if compiled else \
                "schema ok (map checks need a server for CARLA towns)"
            print(f"ok    {file}: {note}")
        except ScenarioError as exc:
            bad += 1
            print(f"error {exc}")
    print(f"{len(files) - bad}/{len(files)} valid")
    return 1 if bad else 0


def preview(cfg: DictConfig) -> int:
    from agent.expert import Expert, ExpertConfig
    from envs.driving_env import DrivingEnv

    from .engine import ScenarioRun

    try:
        spec = load_scenario(cfg.path)
    except ScenarioError as exc:
        print(f"error {exc}")
        return 1
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{spec.scenario.name}-{cfg.seed}"
    env = DrivingEnv(cfg.env)
    run = ScenarioRun(spec, int(cfg.seed))
    expert = Expert(env, ExpertConfig.from_dict(OmegaConf.to_container(cfg.expert)))
    video = None
    try:
        obs, info = env.reset(seed=int(cfg.seed), options={"scenario": run})
        expert.reset()
        picture_written = False
        for _ in range(int(cfg.max_steps)):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            frame = cv2.cvtColor(env.render(), cv2.COLOR_RGB2BGR)
            if video is None:
                video = cv2.VideoWriter(str(stem.with_suffix(".mp4")), cv2.VideoWriter_fourcc(*"mp4v"),
                                        20.0, (frame.shape[1], frame.shape[0]))
            video.write(frame)
            if not picture_written and run.trigger_frame is not None:
                cv2.imwrite(str(stem.with_suffix(".png")), frame)
                picture_written = True
            if terminated or truncated:
                break
        if not picture_written:  # nothing triggered (a scenario without waits): the last frame
            cv2.imwrite(str(stem.with_suffix(".png")), frame)
    finally:
        if video is not None:
            video.release()
        env.close()
    print(f"{spec.scenario.name} seed {cfg.seed}: {info['done_reason']}, route completion "
          f"{info['route_completion']:.1f} %, infractions {[i['kind'] for i in info['infractions']] or 'none'}")
    print(f"wrote {stem.with_suffix('.png')} and {stem.with_suffix('.mp4')}")
    return 0
