"""The recorded-log format, schema version 2 (docs/data.md): one Parquet file per episode.

A row per step. The eight camera images of a step are one JPEG: the cameras stacked vertically in rig order
(a mosaic of N*H x W pixels), so a sample costs one decode. Episode metadata is JSON in the file's key-value
metadata under `slimdrive.episode`; the layout (cameras, image size, waypoint count, JPEG quality) under
`slimdrive.layout`. No pickle anywhere: Arrow types, JSON and JPEG only.

Version 2 adds what a re-render needs besides poses (`slimdrive dataset rerender`): each actor's colour, the
state of every traffic light per step (`light_states`, in the order of the metadata's `traffic_lights`) and the
ego's blueprint and colour. Version 1 files (without them) are still read; they cannot be re-rendered.

This module validates a collector's step and metadata dicts and turns steps into Arrow columns.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
META_EPISODE = b"slimdrive.episode"
META_LAYOUT = b"slimdrive.layout"
META_VERSION = b"slimdrive.schema_version"
FILE_SUFFIX = ".parquet"

HAZARD_KINDS = ("", "vehicle", "walker", "static", "red_light", "yellow_light")  # agent.expert.Plan.hazard_kind
COMMAND_NAMES = {1: "LEFT", 2: "RIGHT", 3: "STRAIGHT", 4: "LANEFOLLOW", 5: "CHANGELANELEFT", 6: "CHANGELANERIGHT"}

ACTOR_FIELDS = ("x", "y", "z", "roll", "pitch", "yaw", "vx", "vy", "vz")
LIGHT_STATES = (0, 1, 2, 3, 4)  # carla.TrafficLightState: Red, Yellow, Green, Off, Unknown
LIGHT_FIELDS = ("id", "x", "y", "z", "yaw")  # a metadata `traffic_lights` entry


def _actor_type(version: int) -> pa.DataType:
    colour = [("color", pa.string())] if version >= 2 else []  # the blueprint's "R,G,B" colour, "" for its default
    return pa.struct([("id", pa.int32()), ("type_id", pa.string())] + colour
                     + [(f, pa.float32()) for f in ACTOR_FIELDS])


def _vec(n: int, dtype: pa.DataType | None = None) -> pa.DataType:
    return pa.list_(dtype or pa.float32(), n)


def arrow_schema(waypoints_k: int, version: int = SCHEMA_VERSION) -> pa.Schema:
    """The step table's columns (without metadata) for episodes whose expert plans `waypoints_k` points."""
    added = [("light_states", pa.list_(pa.int8()))] if version >= 2 else []  # per metadata traffic light
    return pa.schema([
        ("frame", pa.int64()),
        ("time_s", pa.float64()),
        ("cameras", pa.binary()),                     # one JPEG: cameras stacked vertically, rig order
        ("ego_location", _vec(3, pa.float64())),      # world x, y, z, m
        ("ego_rotation", _vec(3)),                    # roll, pitch, yaw, degrees
        ("ego_velocity", _vec(3)),                    # world, m/s
        ("ego_acceleration", _vec(3)),                # world, m/s^2
        ("speed", pa.float32()),                      # m/s
        ("command", pa.int8()),                       # RoadOption 1..6
        ("target_point", _vec(2)),                    # ego frame (x forward, y right), m
        ("control", _vec(3)),                         # steer, throttle, brake: APPLIED
        ("expert", _vec(3)),                          # steer, throttle, brake: the expert's own (the label)
        ("waypoints", _vec(2 * waypoints_k)),         # K points (x, y) flattened, ego frame, m
        ("target_speed", pa.float32()),               # m/s, the expert's wish
        ("brake", pa.bool_()),                        # the expert brakes for a hazard or a light
        ("hazard_kind", pa.string()),
        ("hazard_actor", pa.int32()),                 # -1: none
        ("light_state", pa.string()),
        ("perturbed", pa.bool_()),                    # the applied control was noise-perturbed
        ("events", pa.string()),                      # JSON list of small dicts
        ("infractions", pa.string()),                 # JSON list of small dicts
        ("actors", pa.list_(_actor_type(version))),   # every vehicle / walker / prop, world pose + velocity
    ] + added)


# columns the reader loads for every step at index time (everything but images and actors)
LABEL_COLUMNS = ("frame", "time_s", "ego_location", "speed", "command", "target_point", "control", "expert",
                 "waypoints", "target_speed", "brake", "perturbed", "hazard_kind")

REQUIRED_STEP_KEYS = ("frame", "time_s", "cameras", "ego", "command", "target_point", "control", "expert",
                      "waypoints", "target_speed", "brake", "perturbed")
OPTIONAL_STEP_KEYS = {"hazard_kind": "", "hazard_actor": -1, "light_state": "", "events": (), "infractions": (),
                      "actors": (), "light_states": ()}
EGO_KEYS = {"location": 3, "rotation": 3, "velocity": 3, "acceleration": 3}
REQUIRED_METADATA_KEYS = ("scenario", "seed", "rig")
DOCUMENTED_METADATA_KEYS = ("schema_version", "scenario", "scenario_file", "scenario_sha256", "seed", "parameters",
                            "weather", "map", "rig", "fixed_delta_seconds", "agent", "noise", "code_version",
                            "simulator", "created", "ego_blueprint", "ego_color", "traffic_lights", "rerendered_from")


class LogFormatError(ValueError):
    """A step, metadata dict or file that does not follow the recorded-log schema."""


def _where(step_index: int | None, field: str) -> str:
    return f"step {step_index}, field {field!r}" if step_index is not None else f"field {field!r}"


def finite_vector(value: Any, n: int | tuple, field: str, step_index: int | None = None) -> np.ndarray:
    shape = (n,) if isinstance(n, int) else n
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LogFormatError(f"{_where(step_index, field)}: not numeric ({exc})") from None
    if arr.shape != shape:
        raise LogFormatError(f"{_where(step_index, field)}: shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise LogFormatError(f"{_where(step_index, field)}: not finite ({arr.tolist()})")
    return arr


def finite_scalar(value: Any, field: str, step_index: int | None = None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise LogFormatError(f"{_where(step_index, field)}: not a number ({value!r})") from None
    if not math.isfinite(x):
        raise LogFormatError(f"{_where(step_index, field)}: not finite ({value!r})")
    return x


def check_metadata(metadata: dict) -> dict:
    """A JSON-serialisable copy of the episode metadata with `schema_version` set; names what is wrong."""
    if not isinstance(metadata, dict):
        raise LogFormatError(f"episode metadata must be a dict, got {type(metadata).__name__}")
    missing = [k for k in REQUIRED_METADATA_KEYS if k not in metadata]
    if missing:
        raise LogFormatError(f"episode metadata lacks {missing} (documented keys: {list(DOCUMENTED_METADATA_KEYS)})")
    meta = dict(metadata)
    if meta.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise LogFormatError(f"episode metadata schema_version {meta['schema_version']!r}, "
                             f"this writer writes {SCHEMA_VERSION}")
    meta["schema_version"] = SCHEMA_VERSION
    rig = meta["rig"]
    if not isinstance(rig, dict) or not isinstance(rig.get("cameras"), list) or not rig["cameras"]:
        raise LogFormatError("episode metadata field 'rig' needs a name and a non-empty 'cameras' list")
    lights = meta.get("traffic_lights", [])
    if not isinstance(lights, list) or not all(isinstance(x, dict) and set(LIGHT_FIELDS) <= set(x) for x in lights):
        raise LogFormatError(f"episode metadata field 'traffic_lights' must be a list of {{{', '.join(LIGHT_FIELDS)}}}")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LogFormatError(f"episode metadata is not JSON-serialisable: {exc}") from None
    return meta


def check_step(step: dict, step_index: int, layout: dict | None) -> dict:
    """Validate one collector step; returns the Arrow row (images not yet encoded: key `cameras` is the array).

    `layout` ({"cameras", "height", "width", "waypoints_k"}) is fixed by the first step; later steps must agree.
    """
    if not isinstance(step, dict):
        raise LogFormatError(f"step {step_index}: a step is a dict, got {type(step).__name__}")
    missing = [k for k in REQUIRED_STEP_KEYS if k not in step]
    if missing:
        raise LogFormatError(f"step {step_index}: missing {missing}")
    unknown = sorted(set(step) - set(REQUIRED_STEP_KEYS) - set(OPTIONAL_STEP_KEYS))
    if unknown:
        raise LogFormatError(f"step {step_index}: unknown field(s) {unknown} (schema version {SCHEMA_VERSION})")
    cams = step["cameras"]
    if not isinstance(cams, np.ndarray) or cams.dtype != np.uint8 or cams.ndim != 4 or cams.shape[-1] != 3:
        desc = f"{cams.dtype} {cams.shape}" if isinstance(cams, np.ndarray) else type(cams).__name__
        raise LogFormatError(f"{_where(step_index, 'cameras')}: expected a uint8 array (N, H, W, 3), got {desc}")
    if layout is not None and cams.shape[:3] != (layout["cameras"], layout["height"], layout["width"]):
        raise LogFormatError(f"{_where(step_index, 'cameras')}: shape {cams.shape}, the episode's is "
                             f"{(layout['cameras'], layout['height'], layout['width'], 3)}")
    ego = step["ego"]
    if not isinstance(ego, dict):
        raise LogFormatError(f"{_where(step_index, 'ego')}: expected a dict")
    row: dict[str, Any] = {"cameras": cams}
    for k, n in EGO_KEYS.items():
        if k not in ego:
            raise LogFormatError(f"{_where(step_index, 'ego.' + k)}: missing")
        row["ego_" + k] = finite_vector(ego[k], n, "ego." + k, step_index).tolist()
    if "speed" not in ego:
        raise LogFormatError(f"{_where(step_index, 'ego.speed')}: missing")
    row["speed"] = finite_scalar(ego["speed"], "ego.speed", step_index)
    frame = step["frame"]
    if not isinstance(frame, (int, np.integer)) or isinstance(frame, bool):
        raise LogFormatError(f"{_where(step_index, 'frame')}: expected an int, got {frame!r}")
    row["frame"] = int(frame)
    row["time_s"] = finite_scalar(step["time_s"], "time_s", step_index)
    command = step["command"]
    if isinstance(command, bool) or not isinstance(command, (int, np.integer)) or int(command) not in COMMAND_NAMES:
        raise LogFormatError(f"{_where(step_index, 'command')}: expected a RoadOption int 1..6, got {command!r}")
    row["command"] = int(command)
    row["target_point"] = finite_vector(step["target_point"], 2, "target_point", step_index).tolist()
    row["control"] = finite_vector(step["control"], 3, "control", step_index).tolist()
    row["expert"] = finite_vector(step["expert"], 3, "expert", step_index).tolist()
    wp_shape = np.shape(step["waypoints"])
    k = layout["waypoints_k"] if layout is not None else (wp_shape[0] if len(wp_shape) == 2 and wp_shape[0] else 1)
    row["waypoints"] = finite_vector(step["waypoints"], (k, 2), "waypoints", step_index).reshape(-1).tolist()
    row["target_speed"] = finite_scalar(step["target_speed"], "target_speed", step_index)
    for key in ("brake", "perturbed"):
        if not isinstance(step[key], (bool, np.bool_)):
            raise LogFormatError(f"{_where(step_index, key)}: expected a bool, got {step[key]!r}")
        row[key] = bool(step[key])
    hazard = step.get("hazard_kind", "")
    if hazard not in HAZARD_KINDS:
        raise LogFormatError(f"{_where(step_index, 'hazard_kind')}: {hazard!r} is not one of {list(HAZARD_KINDS)}")
    row["hazard_kind"] = hazard
    actor = step.get("hazard_actor", -1)
    if isinstance(actor, bool) or not isinstance(actor, (int, np.integer)):
        raise LogFormatError(f"{_where(step_index, 'hazard_actor')}: expected an int (-1: none), got {actor!r}")
    row["hazard_actor"] = int(actor)
    light = step.get("light_state", "")
    if not isinstance(light, str):
        raise LogFormatError(f"{_where(step_index, 'light_state')}: expected a str, got {light!r}")
    row["light_state"] = light
    for key in ("events", "infractions"):
        items = step.get(key, ())
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, dict) for i in items):
            raise LogFormatError(f"{_where(step_index, key)}: expected a list of dicts")
        try:
            row[key] = json.dumps(list(items), allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise LogFormatError(f"{_where(step_index, key)}: not JSON-serialisable ({exc})") from None
    actors = []
    for j, a in enumerate(step.get("actors", ())):
        if not isinstance(a, dict) or "id" not in a or "type_id" not in a:
            raise LogFormatError(f"{_where(step_index, f'actors[{j}]')}: needs id, type_id, {', '.join(ACTOR_FIELDS)}")
        try:
            entry = {"id": int(a["id"]), "type_id": str(a["type_id"]), "color": str(a.get("color", ""))}
            entry.update({f: float(a[f]) for f in ACTOR_FIELDS})
        except KeyError as exc:
            raise LogFormatError(f"{_where(step_index, f'actors[{j}]')}: missing {exc}") from None
        if not all(math.isfinite(entry[f]) for f in ACTOR_FIELDS):
            raise LogFormatError(f"{_where(step_index, f'actors[{j}]')} (id {entry['id']}): not finite")
        actors.append(entry)
    row["actors"] = actors
    states = step.get("light_states", ())
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and int(x) in LIGHT_STATES
               for x in states):
        raise LogFormatError(f"{_where(step_index, 'light_states')}: expected carla.TrafficLightState ints "
                             f"{list(LIGHT_STATES)}, got {list(states)!r:.80}")
    row["light_states"] = [int(x) for x in states]
    return row


def layout_of(first_step_row: dict, jpeg_quality: int, camera_names: list[str]) -> dict:
    n, h, w, _ = first_step_row["cameras"].shape
    return {"cameras": int(n), "height": int(h), "width": int(w),
            "waypoints_k": len(first_step_row["waypoints"]) // 2, "jpeg_quality": int(jpeg_quality),
            "camera_names": list(camera_names), "mosaic": "vertical", "color": "RGB"}


def read_file_metadata(kv: dict[bytes, bytes] | None, name: str) -> tuple[dict, dict]:
    """(episode metadata, layout) from a Parquet file's key-value metadata; LogFormatError naming `name`."""
    kv = kv or {}
    if META_VERSION not in kv or META_EPISODE not in kv or META_LAYOUT not in kv:
        raise LogFormatError(f"{name}: not a slimdrive episode log (no {META_VERSION.decode()} metadata)")
    version = kv[META_VERSION].decode()
    if version not in {str(v) for v in READABLE_VERSIONS}:
        raise LogFormatError(f"{name}: schema version {version}, this reader reads {list(READABLE_VERSIONS)}; "
                             "read it with the slimdrive version that wrote it")
    try:
        metadata, layout = json.loads(kv[META_EPISODE]), json.loads(kv[META_LAYOUT])
    except ValueError as exc:
        raise LogFormatError(f"{name}: unreadable metadata JSON ({exc})") from None
    metadata["schema_version"] = int(version)  # the file's own stamp is the authority
    return metadata, layout
