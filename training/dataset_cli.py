"""`slimdrive dataset info|verify|view data=DIR`: what a log folder holds, whether it is intact, and a video of
one episode with its labels drawn on (docs/data.md)."""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from evaluation.video import Mp4
from training.logs.reader import EpisodeReader, episode_summary, verify_dir
from training.logs.schema import COMMAND_NAMES
from training.logs.writer import read_manifest


def _data(cfg) -> Path:
    root = Path(str(cfg.data))
    if not root.is_dir():
        raise SystemExit(f"slimdrive dataset: data={root} is not a folder")
    return root


# ------------------------------------------------------------------------------------------------ info
def info(cfg) -> int:
    root = _data(cfg)
    episodes = episode_summary(root)
    if not episodes:
        print(f"{root}: no committed episodes")
        return 1
    steps = sum(len(e["labels"]["frame"]) for e in episodes)
    seconds = km = 0.0
    scenarios, weathers = Counter(), Counter()
    for e in episodes:
        lab, meta = e["labels"], e["metadata"]
        dt = float(meta.get("fixed_delta_seconds") or 0.05)
        seconds += len(lab["frame"]) * dt
        km += float(np.linalg.norm(np.diff(lab["ego_location"][:, :2], axis=0), axis=1).sum()) / 1000
        n = len(lab["frame"])
        scenarios[meta.get("scenario", "?")] += n
        weather = meta.get("weather")
        weathers[weather.get("name", "?") if isinstance(weather, dict) else str(weather)] += n
    cat = {c: np.concatenate([e["labels"][c] for e in episodes]) for c in ("command", "speed", "brake", "perturbed")}
    commands = Counter(int(c) for c in cat["command"])
    summary = {"data": str(root), "episodes": len(episodes), "steps": steps, "hours": seconds / 3600,
               "km": km, "bytes": sum(e["entry"]["bytes"] for e in episodes),
               "bytes_per_step": sum(e["entry"]["bytes"] for e in episodes) / steps,
               "scenario_steps": dict(scenarios), "weather_steps": dict(weathers),
               "command_steps": {COMMAND_NAMES.get(c, str(c)): n for c, n in sorted(commands.items())},
               "brake_fraction": float(cat["brake"].mean()), "perturbed_fraction": float(cat["perturbed"].mean()),
               "speed_mean": float(cat["speed"].mean()), "speed_max": float(cat["speed"].max()),
               "manifest_problems": read_manifest(root).problems}
    print(f"{root}: {len(episodes)} episodes, {steps} steps, {summary['hours']:.3f} h of driving, {km:.2f} km, "
          f"{summary['bytes_per_step'] / 1024:.1f} KB/step")
    for title, counts in (("scenario", scenarios), ("weather", weathers),
                          ("command", Counter({COMMAND_NAMES.get(c, str(c)): n for c, n in commands.items()}))):
        print(f"\n{title:<28} {'steps':>8} {'share':>7}")
        for name, n in counts.most_common():
            print(f"{name:<28} {n:>8} {100 * n / steps:>6.1f}%")
    print(f"\nbraking {100 * summary['brake_fraction']:.1f}% of steps, "
          f"perturbed {100 * summary['perturbed_fraction']:.1f}%,"
          f" speed mean {summary['speed_mean']:.2f} m/s, max {summary['speed_max']:.2f} m/s")
    for p in summary["manifest_problems"]:
        print(f"warning: {p}")
    png = Path(str(cfg.out)) if cfg.get("out") else root / "dataset_info.png"
    _histograms(png, cat, scenarios, commands)
    js = png.with_suffix(".json")
    js.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"wrote {png}\nwrote {js}")
    return 0


def _histograms(png: Path, cat: dict, scenarios: Counter, commands: Counter) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    names = [COMMAND_NAMES.get(c, str(c)) for c in sorted(commands)]
    ax[0].bar(names, [commands[c] for c in sorted(commands)])
    ax[0].set_title("command (steps)")
    ax[0].tick_params(axis="x", rotation=30)
    ax[1].hist(cat["speed"], bins=30)
    ax[1].set_title("speed (m/s)")
    brake = cat["brake"].astype(bool)
    ax[2].bar(["driving", "brake", "perturbed"], [int((~brake).sum()), int(brake.sum()), int(cat["perturbed"].sum())])
    ax[2].set_title("expert braking / perturbed control (steps)")
    ax[3].barh(list(scenarios), list(scenarios.values()))
    ax[3].set_title("scenario (steps)")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- verify
def verify(cfg) -> int:
    root = _data(cfg)
    report = verify_dir(root)
    for w in report.warnings:
        print(f"warning: {w}")
    for f in report.failures:
        print(f"FAILED: {f}", file=sys.stderr)
    print(f"{root}: {len(report.ok)} episode file(s) intact, {len(report.failures)} failed")
    return 1 if report.failures else 0


# ------------------------------------------------------------------------------------------------ view
_BAR_COLORS = {"steer": (230, 180, 40), "throttle": (60, 200, 60), "brake": (60, 60, 230)}
_ACTOR_SIZE = {"vehicle": (4.6, 2.0), "walker": (0.6, 0.6), "static": (0.8, 0.8)}


def view(cfg) -> int:
    root = _data(cfg)
    manifest = read_manifest(root)
    if not manifest.entries:
        print(f"{root}: no committed episodes", file=sys.stderr)
        return 1
    key = str(cfg.episode) if cfg.get("episode") else sorted(manifest.entries)[0]
    if key not in manifest.entries:
        print(f"{root}: no episode {key!r}; committed: {', '.join(sorted(manifest.entries))}", file=sys.stderr)
        return 1
    reader = EpisodeReader(root, manifest.entries[key], checksum=True)
    table = reader.read(columns=["frame", "time_s", "ego_location", "ego_rotation", "speed", "command",
                                 "target_point", "control", "expert", "waypoints", "target_speed", "brake",
                                 "hazard_kind", "hazard_actor", "light_state", "perturbed",
                                 "actors"]).to_pylist()
    scale = int(cfg.scale)
    out = Path(str(cfg.out)) if cfg.get("out") else root / f"view_{key}.mp4"
    fps = 1.0 / float(reader.metadata.get("fixed_delta_seconds") or 0.05) / max(1, int(cfg.every))
    video = Mp4(out, fps)
    rows = range(0, len(table), max(1, int(cfg.every)))
    if cfg.get("max_frames"):
        rows = rows[:int(cfg.max_frames)]
    try:
        for row in rows:
            video.write(_view_frame(reader, row, table[row], scale))
    except OSError as exc:
        print(f"slimdrive dataset view: {exc}", file=sys.stderr)
        return 1
    finally:
        video.close()
    print(f"{key}: {len(rows)} frames at {fps:g} fps")
    print(f"wrote {out}")
    return 0


def _view_frame(reader: EpisodeReader, row: int, step: dict, scale: int) -> np.ndarray:
    cams = reader.cameras(row)  # RGB, stored size
    n, h, w, _ = cams.shape
    cols = 4
    rows = math.ceil(n / cols)
    mosaic = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        mosaic[r * h:(r + 1) * h, c * w:(c + 1) * w] = cams[i]
    mosaic = cv2.cvtColor(cv2.resize(mosaic, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST),
                          cv2.COLOR_RGB2BGR)
    for i, name in enumerate(reader.layout.get("camera_names", [])):
        r, c = divmod(i, cols)
        cv2.putText(mosaic, name, (c * w * scale + 3, r * h * scale + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (255, 255, 255), 1, cv2.LINE_AA)
    side = mosaic.shape[0]
    panel = _birdseye(step, side)
    text = np.zeros((side, 230, 3), np.uint8)
    lines = [f"frame {step['frame']}  t {step['time_s']:.2f} s",
             f"speed {step['speed']:.2f} m/s  target {step['target_speed']:.2f}",
             f"command {COMMAND_NAMES.get(step['command'], step['command'])}",
             f"brake {'YES' if step['brake'] else 'no'}  {step['hazard_kind'] or ''}",
             f"light {step['light_state'] or '-'}  {'PERTURBED' if step['perturbed'] else ''}"]
    for j, line in enumerate(lines):
        color = (80, 80, 255) if (j == 3 and step["brake"]) or "PERTURBED" in line else (230, 230, 230)
        cv2.putText(text, line, (6, 16 + 16 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    y = 16 * len(lines) + 14
    for title, vec in (("applied", step["control"]), ("expert", step["expert"])):
        cv2.putText(text, title, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (200, 200, 200), 1, cv2.LINE_AA)
        y += 6
        for (name, color), v in zip(_BAR_COLORS.items(), vec):
            x0 = 70
            cv2.putText(text, name, (6, y + 9), cv2.FONT_HERSHEY_SIMPLEX, 0.33, color, 1, cv2.LINE_AA)
            cv2.rectangle(text, (x0, y), (x0 + 150, y + 10), (80, 80, 80), 1)
            if name == "steer":
                mid = x0 + 75
                cv2.rectangle(text, (mid, y + 1), (mid + int(75 * float(v)), y + 9), color, -1)
            else:
                cv2.rectangle(text, (x0, y + 1), (x0 + int(150 * float(v)), y + 9), color, -1)
            y += 14
        y += 8
    return np.concatenate([mosaic, text, panel], axis=1)


def _birdseye(step: dict, size: int, metres: float = 40.0) -> np.ndarray:
    """Ego-frame top view (x forward = up, y right = right): actors as boxes, waypoints, target point."""
    img = np.full((size, size, 3), 40, np.uint8)
    ppm = size / metres
    origin = np.array([size / 2, size * 0.7])

    def px(x_fwd, y_right):
        return (int(origin[0] + y_right * ppm), int(origin[1] - x_fwd * ppm))

    ex, ey = step["ego_location"][0], step["ego_location"][1]
    yaw = math.radians(step["ego_rotation"][2])
    c, s = math.cos(yaw), math.sin(yaw)
    for a in step["actors"]:
        dx, dy = a["x"] - ex, a["y"] - ey
        fwd, right = c * dx + s * dy, -s * dx + c * dy   # CARLA: left-handed, y right
        length, width = _ACTOR_SIZE.get(a["type_id"].split(".")[0], (1.0, 1.0))
        rel = math.radians(a["yaw"]) - yaw
        corners = []
        for u, v in ((1, 1), (1, -1), (-1, -1), (-1, 1)):
            cx, cy = u * length / 2, v * width / 2
            corners.append(px(fwd + cx * math.cos(rel) - cy * math.sin(rel),
                              right + cx * math.sin(rel) + cy * math.cos(rel)))
        color = (60, 60, 220) if a["id"] == step.get("hazard_actor", -1) else (200, 160, 60)
        cv2.fillPoly(img, [np.array(corners, np.int32)], color)
    ego = [px(2.3, 1.0), px(2.3, -1.0), px(-2.3, -1.0), px(-2.3, 1.0)]
    cv2.fillPoly(img, [np.array(ego, np.int32)], (240, 240, 240))
    wps = np.asarray(step["waypoints"], np.float64).reshape(-1, 2)
    for p in wps:
        cv2.circle(img, px(p[0], p[1]), 3, (60, 220, 60), -1)
    tp = step["target_point"]
    cv2.drawMarker(img, px(tp[0], tp[1]), (0, 200, 255), cv2.MARKER_CROSS, 10, 2)
    cv2.putText(img, f"bird's-eye {metres:.0f} m", (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (220, 220, 220), 1)
    return img
