"""`slimdrive dataset rerender data=DIR out=DIR2`: recorded episodes seen again through another rig, image size
or weather, without driving them again (docs/data.md, "Re-rendering").

`training.replay` poses the embedded simulator as each step was recorded and reads the new rig's images; this
module writes them as a new episode with the same writer and schema, under the same key in another folder:
labels, controls, events, velocities and light states are copied from the source, the ego and actor poses are
those read back from the re-rendering world (checked against the recorded ones), the cameras are new. The
metadata names the source file and its sha256 under `rerendered_from`, and states the rig, image size and
weather used. Schema version 1 files lack the colours, light states and ego blueprint a re-render needs: they
are refused, naming the file. Rerunning resumes; `workers=N` re-renders N episodes at a time (`envs.workers`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from envs.provenance import code_version
from envs.rig import Rig, rig_from_config
from envs.workers import Death, close_when_the_worker_ends, supervised

from .collect import rig_metadata, weather_fields
from .logs.reader import EpisodeReader
from .logs.schema import LogFormatError
from .logs.writer import MANIFEST, EpisodeWriter, cleanup_leftovers, committed_keys, read_manifest
from .replay import POSE_TOLERANCE_M, ROTATION_TOLERANCE_DEG, Replayer, RerenderError


@dataclass(frozen=True)
class RerenderSettings:
    rig: dict | None  # a rig config (`conf/rig/*.yaml`, chosen by `rig=NAME`); None: the recorded rig
    image_size_x: int | None  # None: the recorded size
    image_size_y: int | None
    weather: str | None  # a carla.WeatherParameters preset; None: the recorded weather
    jpeg_quality: int | None  # None: the source's

    @staticmethod
    def from_cfg(cfg: DictConfig) -> RerenderSettings:
        def opt(key: str, kind=str):
            value = cfg.get(key)
            return None if value is None else kind(value)

        rig = cfg.get("rig")
        return RerenderSettings(OmegaConf.to_container(rig) if rig is not None else None, opt("image_size_x", int),
                                opt("image_size_y", int), opt("weather"), opt("jpeg_quality", int))


def recorded_rig(metadata: dict) -> Rig:
    """The rig an episode was recorded with, from its metadata (intrinsics and extrinsics of every camera)."""
    cams = metadata["rig"]["cameras"]
    return rig_from_config({"name": metadata["rig"].get("name", "recorded"), "image_size_x": cams[0]["width"],
                            "image_size_y": cams[0]["height"], "cameras": cams}, "the episode's metadata rig")


def target_rig(metadata: dict, settings: RerenderSettings) -> Rig:
    """The rig to render: the recorded one or `settings.rig`, at the recorded size unless overridden."""
    source = recorded_rig(metadata)
    rig = rig_from_config(settings.rig, f"rig {settings.rig.get('name', '?')}") if settings.rig else source
    return rig_from_config({"name": rig.name, "image_size_x": settings.image_size_x or source.image_size_x,
                            "image_size_y": settings.image_size_y or source.image_size_y,
                            "cameras": [vars(c) for c in rig.cameras]}, f"rig {rig.name}")


def weather_for(carla, metadata: dict, preset: str | None) -> tuple[object, dict]:
    """(carla.WeatherParameters, its metadata entry): a preset by name, or the recorded parameters."""
    if preset is not None:
        if not isinstance(getattr(carla.WeatherParameters, preset, None), carla.WeatherParameters):
            raise ValueError(f"weather={preset}: not a carla.WeatherParameters preset (e.g. ClearNoon, "
                             "HardRainNoon, ClearNight, CloudySunset)")
        weather = getattr(carla.WeatherParameters, preset)
        return weather, {"name": preset, **weather_fields(weather)}
    recorded = dict(metadata.get("weather") or {})
    weather = carla.WeatherParameters()
    for key, value in recorded.items():
        if key != "name" and hasattr(weather, key):
            setattr(weather, key, float(value))
    return weather, recorded


def _writer_step(row: dict, cameras: np.ndarray) -> dict:
    """A stored row (as `pyarrow` lists it) back into the writer's step dict, with new cameras."""
    return {
        "frame": row["frame"], "time_s": row["time_s"], "cameras": cameras,
        "ego": {"location": row["ego_location"], "rotation": row["ego_rotation"], "velocity": row["ego_velocity"],
                "acceleration": row["ego_acceleration"], "speed": row["speed"]},
        "command": row["command"], "target_point": row["target_point"], "control": row["control"],
        "expert": row["expert"], "waypoints": np.reshape(row["waypoints"], (-1, 2)),
        "target_speed": row["target_speed"], "brake": row["brake"], "hazard_kind": row["hazard_kind"],
        "hazard_actor": row["hazard_actor"], "light_state": row["light_state"], "perturbed": row["perturbed"],
        "events": json.loads(row["events"]), "infractions": json.loads(row["infractions"]),
        "actors": row["actors"], "light_states": row["light_states"],
    }


def rerender_episode(replayer: Replayer, data: Path, entry: dict, out: Path, settings: RerenderSettings) -> dict:
    """Re-render the committed episode `entry` of `data` into `out` (same key); returns the new manifest entry."""
    import carla

    reader = EpisodeReader(data, entry, checksum=True)
    path = data / entry["file"]
    source = reader.metadata
    if source["schema_version"] < 2:
        raise RerenderError(f"{path}: schema version {source['schema_version']} records no actor colours, traffic "
                            "light states or ego blueprint, which a re-render needs; re-collect the episode with "
                            "`slimdrive collect` (schema version 2)")
    rig = target_rig(source, settings)
    weather, weather_meta = weather_for(carla, source, settings.weather)
    columns = [c for c in reader.file.schema_arrow.names if c != "cameras"]
    rows = reader.read(columns=columns).to_pylist()
    quality = settings.jpeg_quality or int(reader.layout.get("jpeg_quality", 90))
    # the new simulator's endpoint is known once it runs: the metadata is completed after the first step
    frames = replayer.render(path, source, rows, rig, weather)
    first_row, first_images = next(frames)
    metadata = {k: v for k, v in source.items() if k != "schema_version"}
    metadata.update({
        "rig": rig_metadata(rig), "weather": weather_meta, "simulator": replayer.endpoint,
        "code_version": code_version(), "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "rerendered_from": {
            "data": str(data), "file": entry["file"], "sha256": entry["sha256"], "key": entry["key"],
            "schema_version": source["schema_version"], "rig": rig.name,
            "image_size": [rig.image_size_x, rig.image_size_y],
            "weather": settings.weather or "recorded", "jpeg_quality": quality,
            "pose_tolerance_m": POSE_TOLERANCE_M, "rotation_tolerance_deg": ROTATION_TOLERANCE_DEG,
        },
    })
    try:
        with EpisodeWriter(out, entry["key"], metadata, jpeg_quality=quality) as writer:
            writer.add(_writer_step(first_row, first_images))
            for row, images in frames:
                writer.add(_writer_step(row, images))
            return writer.commit()
    finally:
        frames.close()  # the world's actors go now, not when the generator is collected


# ------------------------------------------------------------------------------------------------ command
_replayer: Replayer | None = None
_job: tuple[Path, Path, RerenderSettings, dict] | None = None


def _start_worker(data: str, out: str, settings: RerenderSettings) -> None:
    global _replayer, _job
    _replayer = Replayer()
    _job = (Path(data), Path(out), settings, read_manifest(data).entries)
    close_when_the_worker_ends(_replayer)


def _rerender_or_refuse(replayer: Replayer, data: Path, entry: dict, out: Path, settings: RerenderSettings) -> dict:
    """The new manifest entry, or {"refused": why} for an episode that cannot be re-rendered (the others go on)."""
    try:
        return rerender_episode(replayer, data, entry, out, settings)
    except (LogFormatError, ValueError) as exc:
        return {"refused": str(exc)}
    except (RuntimeError, TimeoutError) as exc:  # the simulator's: the next episode gets a fresh one
        replayer.close()
        return {"refused": f"{data / entry['file']}: the simulator failed ({exc}); rerun to try it again"}


def _rerender_in_worker(key: str) -> dict:
    data, out, settings, entries = _job
    return _rerender_or_refuse(_replayer, data, entries[key], out, settings)


def run(cfg: DictConfig) -> int:
    data, out = Path(str(cfg.data)), Path(str(cfg.out))
    if not (data / MANIFEST).is_file():
        print(f"slimdrive dataset rerender: data={data} has no {MANIFEST} (not a slimdrive log folder)")
        return 2
    if out.resolve() == data.resolve():
        print(f"slimdrive dataset rerender: out={out} is the source folder; write the re-rendered log elsewhere")
        return 2
    manifest = read_manifest(data)
    keys = sorted(manifest.entries)
    if cfg.get("episode"):
        if str(cfg.episode) not in manifest.entries:
            print(f"slimdrive dataset rerender: {data} has no episode {cfg.episode!r}; committed: {', '.join(keys)}")
            return 2
        keys = [str(cfg.episode)]
    if cfg.get("limit"):
        keys = keys[: int(cfg.limit)]
    try:
        settings = RerenderSettings.from_cfg(cfg)
    except ValueError as exc:
        print(f"slimdrive dataset rerender: {exc}")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for leftover in cleanup_leftovers(out):
        print(f"removed leftover {leftover} (an episode interrupted before its commit)")
    done = committed_keys(out)
    # grouped by scenario, so by map: a map change relaunches the simulator
    todo = sorted((k for k in keys if k not in done), key=lambda k: (str(manifest.entries[k].get("scenario")), k))
    if done & set(keys):
        print(f"resuming: {len(done & set(keys))} episodes already re-rendered in {out}, {len(todo)} to go")
    failed: list[str] = []

    def done_one(key: str, entry: dict) -> None:
        if "refused" in entry:
            failed.append(entry["refused"])
        else:
            print(f"{key}: {entry['steps']} steps re-rendered")

    workers = int(cfg.get("workers") or 1)
    if workers <= 1:
        replayer = Replayer()
        try:
            for key in todo:
                done_one(key, _rerender_or_refuse(replayer, data, manifest.entries[key], out, settings))
        finally:
            replayer.close()
    else:
        def died(death: Death) -> None:
            what = "while starting" if death.task is None else f"while re-rendering {death.task}"
            print(f"worker pid {death.pid} died ({death.cause}) {what}{'; trying it again' if death.retried else ''}")

        gave_up = supervised(todo, workers, _start_worker, (str(data), str(out), settings), _rerender_in_worker,
                             done_one, died)
        failed += [f"{d.task}: its worker died {d.attempt} times ({d.cause})" for d in gave_up]
    for line in failed:
        print(f"not re-rendered: {line}")
    total = len(committed_keys(out) & set(keys))
    print(f"wrote {total} re-rendered episodes to {out} (manifest {out / MANIFEST})")
    return 1 if failed else 0

