"""CARLA's recorder and replayer: the log file in CARLA's binary layout, the query texts, and replaying a log.

The layout is the one CARLA documents ("Recorder Binary File Format", docs/ref_recorder_binary_file_format.md)
and its recorder writes (Unreal/CarlaUE4/Plugins/Carla/Source/Carla/Recorder/CarlaRecorder*.h in 0.9.16), all
little endian:

- info header: u16 version (1), string magic "CARLA_RECORDER", i64 date (seconds since the epoch), string map
  name; a string is a u16 byte length and that many UTF-8 bytes, with no terminator;
- then packets, each a u8 id and a u32 size followed by `size` bytes. A frame is FrameStart (u64 id, f64 duration,
  f64 elapsed: the duration is the time to the next frame, written when that frame is, -1 on the last), the
  frame's packets, FrameEnd (size 0). Packets holding records start with a u16 count.

Units are Unreal's: locations in centimetres, rotations as (roll, pitch, yaw) in degrees (`FQuat::Euler`), in
CARLA's (left-handed) axes, the ones the client's API uses.

`Recorder` is what the RPC layer (`api.Simulator`) holds: it writes a frame after each tick while recording
(`after_tick`), moves the replayed actors before each tick while replaying (`before_tick`), and answers the
query calls with CARLA's text (`CarlaRecorderQuery.cpp`'s layout, C++ stream number formatting).
"""
from __future__ import annotations

import bisect
import logging
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.maps.geometry import wrap_angle

from .blueprints import BLUEPRINTS
from .geometry import compose, relative_to
from .protocol import Transform, VehicleControl

log = logging.getLogger("slimdrive.server")

MAGIC = "CARLA_RECORDER"
VERSION = 1
# CarlaRecorderPacketId (0.9.16)
FRAME_START, FRAME_END, EVENT_ADD, EVENT_DEL, EVENT_PARENT, COLLISION, POSITION, STATE, ANIM_VEHICLE, ANIM_WALKER, \
    VEHICLE_LIGHT, SCENE_LIGHT, KINEMATICS, BOUNDING_BOX, PLATFORM_TIME, PHYSICS_CONTROL, TRAFFIC_LIGHT_TIME, \
    TRIGGER_VOLUME, FRAME_COUNTER, WALKER_BONES, VISUAL_TIME, VEHICLE_DOOR, ANIM_VEHICLE_WHEELS, ANIM_BIKER = range(24)
PACKET_NAMES = (
    "FrameStart", "FrameEnd", "EventAdd", "EventDel", "EventParent", "Collision", "Position", "State", "AnimVehicle",
    "AnimWalker", "VehicleLight", "SceneLight", "Kinematics", "BoundingBox", "PlatformTime", "PhysicsControl",
    "TrafficLightTime", "TriggerVolume", "FrameCounter", "WalkerBones", "VisualTime", "VehicleDoor",
    "AnimVehicleWheels", "AnimBiker",
)
# FCarlaActor::ActorType, as EventAdd stores it; show_recorder_collisions' categories by type
OTHER, VEHICLE, WALKER, TRAFFIC_LIGHT, TRAFFIC_SIGN, SENSOR = range(6)
CATEGORIES = "ovwtha"  # other, vehicle, walker, traffic light, hero, any
NO_ACTOR = 0xFFFFFFFF  # a collision with something that is not an actor

# Packets of fixed-size records after a u16 count: their record layouts
RECORDS = {
    EVENT_DEL: struct.Struct("<I"),
    EVENT_PARENT: struct.Struct("<II"),
    COLLISION: struct.Struct("<IIIBB"),  # collision id, actor 1, actor 2, actor 1 is hero, actor 2 is hero
    POSITION: struct.Struct("<I6f"),  # id, location (cm), rotation (roll, pitch, yaw)
    STATE: struct.Struct("<IBfB"),  # traffic light id, frozen, elapsed, state
    ANIM_VEHICLE: struct.Struct("<IfffBi"),  # id, steering, throttle, brake, handbrake, gear
    ANIM_WALKER: struct.Struct("<If"),  # id, speed
    VEHICLE_LIGHT: struct.Struct("<II"),  # id, carla.VehicleLightState bits
    KINEMATICS: struct.Struct("<I6f"),  # id, linear velocity (m/s), angular velocity (deg/s)
    BOUNDING_BOX: struct.Struct("<I6f"),  # id, origin, extent (cm)
    TRAFFIC_LIGHT_TIME: struct.Struct("<Ifff"),  # id, green, yellow, red time
}
FRAME = struct.Struct("<Qdd")
HEADER = struct.Struct("<BI")
DOUBLE = struct.Struct("<d")
COUNT = struct.Struct("<H")
MAX_RECORDS = 0xFFFF  # a packet's u16 count
CM = 100.0
FOLLOW_CAMERA = np.array([-10.0, 0.0, 5.0, -25.0, 0.0, 0.0])  # the spectator's pose relative to a followed actor


class RecorderFileError(Exception):
    """A recorder file that cannot be read, or can be read only up to some frame: names the file and the problem."""


def recorder_folder() -> Path:
    """Where relative file names go (CARLA writes them under its project's Saved folder): `$SLIMDRIVE_RECORDER_DIR`,
    else `$XDG_DATA_HOME/slimdrive/recorder` (`~/.local/share/slimdrive/recorder`)."""
    folder = os.environ.get("SLIMDRIVE_RECORDER_DIR")
    if folder:
        return Path(folder)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "slimdrive" / "recorder"


def recorder_path(name: str) -> Path:
    """An absolute name as given; a relative one under `recorder_folder()`, which it may not leave: ValueError for a
    relative name with a '..' part (or an empty one), naming it."""
    path = Path(str(name)).expanduser()
    if path.is_absolute():
        return path
    if ".." in path.parts or not path.parts:
        raise ValueError(f"recorder file name '{name}': a relative name is a file under the recorder folder "
                         f"{recorder_folder()} (no '..'); give an absolute path for a file elsewhere")
    return recorder_folder() / path


# ------------------------------------------------------------------------------------------------ numbers as text
def g(value: float) -> str:
    """A number as C++'s `std::ostream <<` writes it by default (`%g`, 6 significant digits)."""
    return f"{float(value):g}"


def fixed0(value: float) -> str:
    return f"{float(value):.0f}"


# ------------------------------------------------------------------------------------------------------ writing
def _string(text: str) -> bytes:
    data = str(text).encode("utf-8")[:0xFFFF]
    return COUNT.pack(len(data)) + data


def _packet(packet_id: int, body: bytes) -> bytes:
    return HEADER.pack(packet_id, len(body)) + body


def _records(packet_id: int, rows: list[tuple]) -> bytes:
    record = RECORDS[packet_id]
    rows = rows[:MAX_RECORDS]
    return _packet(packet_id, COUNT.pack(len(rows)) + b"".join(record.pack(*row) for row in rows))


def actor_type(actor) -> int:
    return {"vehicle": VEHICLE, "walker": WALKER, "traffic_light": TRAFFIC_LIGHT, "sensor": SENSOR}.get(actor.kind,
                                                                                                      OTHER)


def _euler(transform) -> tuple[float, float, float]:
    """Unreal's `FQuat::Euler()` of a [x, y, z, pitch, yaw, roll] transform: (roll, pitch, yaw)."""
    return float(transform[5]), float(transform[3]), float(transform[4])


def _location_cm(transform) -> tuple[float, float, float]:
    return float(transform[0]) * CM, float(transform[1]) * CM, float(transform[2]) * CM


_UIDS = {bp.id: uid for uid, bp in enumerate(BLUEPRINTS, start=1)}
_POSITION = np.dtype([("id", "<u4"), ("location", "<f4", 3), ("rotation", "<f4", 3)])  # RECORDS[POSITION], packed
assert _POSITION.itemsize == RECORDS[POSITION].size


def _positions(actors: list) -> bytes:
    """The Position packet of `actors` (every pose of every frame: the bulk of a log), built in one go."""
    actors = actors[:MAX_RECORDS]
    rows = np.zeros(len(actors), dtype=_POSITION)
    if actors:
        transforms = np.array([a.transform for a in actors], dtype=float)
        rows["id"] = [a.id for a in actors]
        rows["location"] = transforms[:, :3] * CM
        rows["rotation"] = transforms[:, [5, 3, 4]]  # (roll, pitch, yaw)
    return _packet(POSITION, COUNT.pack(len(rows)) + rows.tobytes())


def _hero(actor) -> bool:
    return actor.attribute("role_name") == "hero"


class Writer:
    """One recording: the file stays open, and each frame is written whole and flushed as it is made, so a
    server that stops (or is killed) while recording leaves every frame before that readable."""

    def __init__(self, path: Path, world, additional_data: bool):
        self.path = path
        self.episode_id = world.episode_id
        self.additional_data = additional_data
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "wb")
        header = VERSION.to_bytes(2, "little") + _string(MAGIC) + struct.pack("<q", int(time.time())) \
            + _string(world.map_name)
        self.file.write(header)
        self.file.flush()
        self.frame_id = 0
        self.elapsed = 0.0
        self.previous_duration_at: int | None = None  # file offset of the last frame's duration
        self.known: set[int] = set()  # actors already added to the log
        self.next_collision = 0
        self.started = time.monotonic()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()

    def write_frame(self, world, contacts, dt: float) -> None:
        """The frame of the tick that has just run: actors added and removed since the last frame, contacts, every
        actor's pose, traffic lights, vehicle and walker animation data (and kinematics, boxes and light times with
        `additional_data`)."""
        if self.frame_id == 0:
            duration = 0.0
        else:
            duration = float(dt)
            self.elapsed += duration
        self.frame_id += 1
        actors = world.actors
        added = [a for i, a in actors.items() if i not in self.known]
        removed = sorted(self.known - actors.keys())
        self.known = set(actors)
        body = bytearray()
        start_at = self.file.tell()
        body += HEADER.pack(FRAME_START, FRAME.size) + FRAME.pack(self.frame_id, -1.0, self.elapsed)
        body += _packet(VISUAL_TIME, DOUBLE.pack(world.elapsed))
        adds = bytearray(COUNT.pack(min(len(added), MAX_RECORDS)))
        for actor in added[:MAX_RECORDS]:
            adds += struct.pack("<IB3f3fI", actor.id, actor_type(actor), *_location_cm(actor.transform),
                                *_euler(actor.transform), _UIDS.get(actor.blueprint.id, 0))
            adds += _string(actor.blueprint.id)
            attributes = [a for a in actor.attributes if a[0]]
            adds += COUNT.pack(len(attributes))
            for attr_id, attr_type, value in attributes:
                adds += bytes([int(attr_type) & 0xFF]) + _string(attr_id) + _string(value)
        body += _packet(EVENT_ADD, bytes(adds))
        body += _records(EVENT_DEL, [(i,) for i in removed])
        body += _records(EVENT_PARENT, [(a.id, a.parent.id) for a in added if a.parent is not None])
        pairs: dict[tuple[int, int], tuple[bool, bool]] = {}
        for first, second, _ in contacts:
            pairs.setdefault((first.id, second.id), (_hero(first), _hero(second)))
        collisions = []
        for (first, second), (hero1, hero2) in pairs.items():
            collisions.append((self.next_collision, first, second, hero1, hero2))
            self.next_collision += 1
        body += _records(COLLISION, collisions)
        placed = [a for a in actors.values() if a.kind not in ("sensor", "traffic_light")]
        body += _positions(placed)
        lights = [a for a in actors.values() if a.traffic_light is not None]
        body += _records(STATE, [(a.id, a.traffic_light.frozen, a.traffic_light.elapsed, a.traffic_light.state)
                                 for a in lights])
        vehicles = [a for a in actors.values() if a.kind == "vehicle"]
        body += _records(ANIM_VEHICLE, [(a.id, c.steer, c.throttle, c.brake, c.hand_brake,
                                         -1 if c.reverse else int(c.gear))
                                        for a in vehicles for c in (a.vehicle_control,)])
        walkers = [a for a in actors.values() if a.kind == "walker"]
        body += _records(ANIM_WALKER, [(a.id, float(np.linalg.norm(a.velocity[:2]))) for a in walkers])
        body += _records(VEHICLE_LIGHT, [(a.id, a.light_state) for a in vehicles])
        if self.additional_data:
            body += _records(KINEMATICS, [(a.id, *map(float, a.velocity), *map(float, a.angular_velocity))
                                          for a in vehicles + walkers])
            boxes = []
            for a in added:
                if a.traffic_light is None and a.blueprint.body is not None:
                    body_box = a.blueprint.body
                    boxes.append((a.id, *(float(v) * CM for v in body_box.center),
                                  *(float(v) * CM for v in body_box.extent)))
            body += _records(BOUNDING_BOX, boxes)
            body += _packet(PLATFORM_TIME, DOUBLE.pack(time.monotonic() - self.started))
            body += _records(TRAFFIC_LIGHT_TIME, [(a.id, a.traffic_light.green_time, a.traffic_light.yellow_time,
                                                   a.traffic_light.red_time) for a in added
                                                  if a.traffic_light is not None])
        body += HEADER.pack(FRAME_END, 0)
        self.file.write(body)
        if self.previous_duration_at is not None:  # the last frame's duration is the time to this one
            self.file.seek(self.previous_duration_at)
            self.file.write(DOUBLE.pack(duration))
            self.file.seek(0, os.SEEK_END)
        self.previous_duration_at = start_at + HEADER.size + 8
        self.file.flush()


# ------------------------------------------------------------------------------------------------------ reading
@dataclass
class ActorAdd:
    id: int
    type: int
    location: tuple[float, float, float]  # cm
    rotation: tuple[float, float, float]  # roll, pitch, yaw
    uid: int
    blueprint: str
    attributes: list[tuple[int, str, str]]

    def attribute(self, name: str, default: str = "") -> str:
        return next((value for _, attr_id, value in self.attributes if attr_id == name), default)


@dataclass
class Frame:
    id: int
    duration: float
    elapsed: float
    packets: list[tuple[int, object]] = field(default_factory=list)  # (packet id, records or value), file order

    def records(self, packet_id: int) -> list:
        return [r for pid, value in self.packets if pid == packet_id for r in value]

    def positions(self) -> dict[int, tuple]:
        return {r[0]: r[1:] for r in self.records(POSITION)}


@dataclass
class Log:
    path: Path
    version: int
    magic: str
    date: int
    map_name: str
    frames: list[Frame]
    problem: str | None = None  # why the frames stop where they do, when the file does not end after a frame

    @property
    def total_time(self) -> float:
        return self.frames[-1].elapsed if self.frames else 0.0


class _Reader:
    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.at = path, data, 0

    def take(self, size: int, what: str) -> bytes:
        if self.at + size > len(self.data):
            raise EOFError(f"{what} needs {size} bytes at byte {self.at}, the file has {len(self.data) - self.at} "
                           "left")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, what))

    def string(self, what: str) -> str:
        (size,) = self.unpack(COUNT, what)
        return self.take(size, what).decode("utf-8", errors="replace")


def _parse_add(reader: _Reader) -> ActorAdd:
    actor_id, kind, x, y, z, roll, pitch, yaw, uid = reader.unpack(struct.Struct("<IB3f3fI"), "EventAdd")
    blueprint = reader.string("EventAdd blueprint id")
    (count,) = reader.unpack(COUNT, "EventAdd attribute count")
    attributes = []
    for _ in range(count):
        (attr_type,) = reader.take(1, "EventAdd attribute type")
        attributes.append((attr_type, reader.string("EventAdd attribute id"), reader.string("EventAdd attribute")))
    return ActorAdd(actor_id, kind, (x, y, z), (roll, pitch, yaw), uid, blueprint, attributes)


def _parse_packet(packet_id: int, body: bytes, path: Path) -> object:
    """The records of one packet; raises ValueError saying what does not fit."""
    name = PACKET_NAMES[packet_id]
    if packet_id in RECORDS:
        record = RECORDS[packet_id]
        if len(body) < 2:
            raise ValueError(f"{name} packet of {len(body)} bytes has no record count")
        (count,) = COUNT.unpack_from(body)
        if len(body) != 2 + count * record.size:
            raise ValueError(f"{name} packet says {count} records of {record.size} bytes but holds {len(body) - 2}")
        return list(record.iter_unpack(body[2:]))
    if packet_id in (VISUAL_TIME, PLATFORM_TIME, FRAME_COUNTER):
        if len(body) != 8:
            raise ValueError(f"{name} packet of {len(body)} bytes, not 8")
        return [DOUBLE.unpack(body)[0] if packet_id != FRAME_COUNTER else struct.unpack("<Q", body)[0]]
    if packet_id == EVENT_ADD:
        reader = _Reader(path, body)
        try:
            (count,) = reader.unpack(COUNT, "EventAdd count")
            adds = [_parse_add(reader) for _ in range(count)]
        except EOFError as exc:
            raise ValueError(f"EventAdd packet of {len(body)} bytes is too short for its records") from exc
        if reader.at != len(body):
            raise ValueError(f"EventAdd packet has {len(body) - reader.at} bytes after its records")
        return adds
    return body  # a packet this server neither writes nor replays: kept as bytes


def read_log(path: Path) -> Log:
    """The log at `path`, with every complete frame. Raises RecorderFileError naming the file when it cannot be read
    or is not a recorder file; a file that is truncated or damaged after its header gives the frames before the
    damage, and `problem` says what and where."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecorderFileError(f"File {path} could not be read: {exc.strerror or exc}") from exc
    reader = _Reader(path, data)
    try:
        (version,) = reader.unpack(struct.Struct("<H"), "the info header")
        magic = reader.string("the info header")
        if magic != MAGIC:
            raise RecorderFileError(f"File {path} is not a CARLA recorder file: its header's magic is {magic!r:.40}, "
                                    f"not {MAGIC!r}")
        (date,) = reader.unpack(struct.Struct("<q"), "the info header")
        map_name = reader.string("the info header")
    except EOFError as exc:
        raise RecorderFileError(f"File {path} is not a CARLA recorder file: it is {len(data)} bytes long, too short "
                                f"for the info header ({exc})") from exc
    frames: list[Frame] = []
    current: Frame | None = None
    problem = None
    while reader.at < len(data):
        packet_at = reader.at
        try:
            packet_id, size = reader.unpack(HEADER, "a packet header")
            if packet_id >= len(PACKET_NAMES):
                raise ValueError(f"unknown packet id {packet_id}")
            body = reader.take(size, f"the {PACKET_NAMES[packet_id]} packet")
            if packet_id == FRAME_START:
                if current is not None:
                    raise ValueError(f"frame {current.id} has no FrameEnd before the next FrameStart")
                if size != FRAME.size:
                    raise ValueError(f"FrameStart packet of {size} bytes, not {FRAME.size}")
                frame_id, duration, elapsed = FRAME.unpack(body)
                if frames and frame_id <= frames[-1].id:
                    raise ValueError(f"frame {frame_id} follows frame {frames[-1].id}")
                current = Frame(frame_id, duration, elapsed)
            elif packet_id == FRAME_END:
                if current is None:
                    raise ValueError("FrameEnd outside a frame")
                frames.append(current)
                current = None
            elif current is None:
                raise ValueError(f"{PACKET_NAMES[packet_id]} packet outside a frame")
            else:
                current.packets.append((packet_id, _parse_packet(packet_id, body, path)))
        except EOFError as exc:
            where = f"inside frame {current.id}" if current is not None else "after its last frame"
            problem = f"it is truncated {where}: {exc}"
            break
        except ValueError as exc:
            where = f" in frame {current.id}" if current is not None else ""
            problem = f"it is damaged at byte {packet_at}{where}: {exc}"
            break
    else:
        if current is not None:
            problem = f"it is truncated inside frame {current.id}: the file ends before its FrameEnd"
    return Log(path, version, magic, date, map_name, frames, problem)


def _problem_line(recording: Log) -> str:
    if recording.problem is None:
        return ""
    last = recording.frames[-1].id if recording.frames else "none"
    return (f"File {recording.path} is damaged: {recording.problem}; read up to its last complete frame "
            f"({last})\n")


def _open_log(name: str) -> tuple[Log | None, str]:
    """(log, "") or (None, CARLA's text for a file that is missing or is not a recorder file)."""
    try:
        path = recorder_path(name)
    except ValueError as exc:
        return None, f"{exc}\n"
    if not path.is_file():
        return None, f"File {path} not found on server\n"
    try:
        return read_log(path), ""
    except RecorderFileError as exc:
        return None, f"File is not a CARLA recorder\n{exc}\n"


def _header_text(recording: Log) -> str:
    date = time.strftime("%x %X", time.localtime(recording.date))
    return f"Version: {recording.version}\nMap: {recording.map_name}\nDate: {date}\n\n"


# ------------------------------------------------------------------------------------------------------ queries
def file_info(name: str, show_all: bool) -> str:
    """`show_recorder_file_info`: the frames with events (every frame and its packets with `show_all`)."""
    recording, error = _open_log(name)
    if recording is None:
        return error
    out = [_header_text(recording)]
    last = Frame(0, 0.0, 0.0)
    for frame in recording.frames:
        last = frame
        printed = show_all
        if show_all:
            out.append(f"Frame {frame.id} at {g(frame.elapsed)} seconds\n")
        for packet_id, records in frame.packets:
            lines = _info_lines(packet_id, records, show_all)
            if lines is None:
                continue
            if (records or packet_id == PLATFORM_TIME) and not printed:
                out.append(f"Frame {frame.id} at {g(frame.elapsed)} seconds\n")
                printed = True
            out.extend(lines)
    out.append(_problem_line(recording))
    out.append(f"\nFrames: {last.id}\nDuration: {g(last.elapsed)} seconds\n")
    return "".join(out)


def _info_lines(packet_id: int, records, show_all: bool) -> list[str] | None:
    """CARLA's lines for one packet, or None for a packet the query does not show."""
    if packet_id == EVENT_ADD:
        lines = []
        for add in records:
            x, y, z = add.location
            lines.append(f" Create {add.id}: {add.blueprint} ({add.type}) at ({g(x)}, {g(y)}, {g(z)})\n")
            lines.extend(f"  {attr_id} = {value}\n" for _, attr_id, value in add.attributes)
        return lines
    if packet_id == EVENT_DEL:
        return [f" Destroy {actor_id}\n" for (actor_id,) in records]
    if packet_id == EVENT_PARENT:
        return [f" Parenting {child} with {parent} (parent)\n" for child, parent in records]
    if packet_id == COLLISION:
        return [f" Collision id {cid} between {a}" + (" (hero) " if hero_a else "") + f" with {b}"
                + (" (hero) " if hero_b else "") + "\n" for cid, a, b, hero_a, hero_b in records]
    if not show_all:
        return None
    if packet_id == POSITION:
        return [f" Positions: {len(records)}\n"] + [
            f"  Id: {i} Location: ({g(x)}, {g(y)}, {g(z)}) Rotation ({g(rx)}, {g(ry)}, {g(rz)})\n"
            for i, x, y, z, rx, ry, rz in records]
    if packet_id == STATE:
        return [f" State traffic lights: {len(records)}\n"] + [
            f"  Id: {i} state: {chr(0x30 + state)} frozen: {int(frozen)} elapsedTime: {g(elapsed)}\n"
            for i, frozen, elapsed, state in records]
    if packet_id == ANIM_VEHICLE:
        return [f" Vehicle animations: {len(records)}\n"] + [
            f"  Id: {i} Steering: {g(steer)} Throttle: {g(throttle)} Brake {g(brake)} Handbrake: {int(hand)} "
            f"Gear: {gear}\n" for i, steer, throttle, brake, hand, gear in records]
    if packet_id == ANIM_WALKER:
        return [f" Walker animations: {len(records)}\n"] + [f"  Id: {i} speed: {g(speed)}\n" for i, speed in records]
    if packet_id == VEHICLE_LIGHT:
        return [f" Vehicle light animations: {len(records)}\n"] + [
            f"  Id: {i} {_light_names(state)}\n" for i, state in records]
    if packet_id == KINEMATICS:
        return [f" Dynamic actors: {len(records)}\n"] + [
            f"  Id: {i} linear_velocity: ({g(vx)}, {g(vy)}, {g(vz)}) angular_velocity: ({g(wx)}, {g(wy)}, {g(wz)})\n"
            for i, vx, vy, vz, wx, wy, wz in records]
    if packet_id == BOUNDING_BOX:
        return [f" Actor bounding boxes: {len(records)}\n"] + [
            f"  Id: {i} origin: ({g(ox)}, {g(oy)}, {g(oz)}) extension: ({g(ex)}, {g(ey)}, {g(ez)})\n"
            for i, ox, oy, oz, ex, ey, ez in records]
    if packet_id == PLATFORM_TIME:
        return [f" Current platform time: {g(records[0])}\n"]
    if packet_id == TRAFFIC_LIGHT_TIME:
        return [f" Traffic Light time events: {len(records)}\n"] + [
            f"  Id: {i} green_time: {g(green)} yellow_time: {g(yellow)} red_time: {g(red)}\n"
            for i, green, yellow, red in records]
    return None


_LIGHTS = ("Position", "LowBeam", "HighBeam", "Brake", "RightBlinker", "LeftBlinker", "Reverse", "Fog", "Interior",
           "Special1", "Special2")
_LIGHTS_SHOWN = ("Position", "LowBeam", "HighBeam", "Brake", "RightBlinker", "LeftBlinker", "Reverse", "Interior",
                 "Fog", "Special1", "Special2")  # the order CARLA's query lists them in


def _light_names(state: int) -> str:
    on = {name for bit, name in enumerate(_LIGHTS) if state & (1 << bit)}
    names = [name for name in _LIGHTS_SHOWN if name in on]
    return " ".join(names) if names else "None"


def _category(value) -> str:
    text = chr(value) if isinstance(value, int) else str(value)[:1]
    return text.lower()


def file_collisions(name: str, type1, type2) -> str:
    """`show_recorder_collisions`: collisions between actors of the two categories ('v' vehicle, 'w' walker,
    't' traffic light, 'o' other, 'h' hero, 'a' any), each at the frame it starts."""
    recording, error = _open_log(name)
    if recording is None:
        return error
    first, second = _category(type1), _category(type2)
    out = [_header_text(recording)]
    out.append(f"{'Time':>8} {'Types':>6} {'Id':>6} {'Actor 1':<35} {'Id':>6} {'Actor 2':<35}\n")
    actors: dict[int, ActorAdd] = {}
    previous: set[tuple[int, int]] = set()
    fixed = False  # CARLA's stream keeps `fixed` and precision 0 once a collision line has set them
    last = Frame(0, 0.0, 0.0)
    for frame in recording.frames:
        last = frame
        current: set[tuple[int, int]] = set()
        for packet_id, records in frame.packets:
            if packet_id == EVENT_ADD:
                actors.update((add.id, add) for add in records)
            elif packet_id == COLLISION:
                for _, a, b, hero_a, hero_b in records:
                    kind_a = CATEGORIES[actors[a].type] if a in actors and actors[a].type < 4 else "o"
                    kind_b = CATEGORIES[actors[b].type] if b in actors and actors[b].type < 4 else "o"
                    if not (_passes(first, kind_a, hero_a) and _passes(second, kind_b, hero_b)):
                        continue
                    if (a, b) not in previous:
                        name_a = actors[a].blueprint if a in actors else ""
                        name_b = actors[b].blueprint if b in actors else ""
                        out.append(f"{fixed0(frame.elapsed):>8}   {kind_a} {kind_b}  {a:>6} {name_a:<35} {b:>6} "
                                   f"{name_b:<35}\n")
                        fixed = True
                    current.add((a, b))
        previous = current
    out.append(_problem_line(recording))
    out.append(f"\nFrames: {last.id}\nDuration: {fixed0(last.elapsed) if fixed else g(last.elapsed)} seconds\n")
    return "".join(out)


def _passes(category: str, kind: str, hero: bool) -> bool:
    return category == "a" or category == kind or (category == "h" and bool(hero))


def file_blocked(name: str, min_time: float, min_distance: float) -> str:
    """`show_recorder_actors_blocked`: actors that moved less than `min_distance` (cm) for at least `min_time`
    seconds, longest first."""
    recording, error = _open_log(name)
    if recording is None:
        return error
    out = [_header_text(recording)]
    out.append(f"{'Time':>8} {'Id':>6} {'Actor':<35} {'Duration':>10}\n")
    names: dict[int, str] = {}
    state: dict[int, list] = {}  # id -> [last location, time stopped, duration stopped]
    results: list[tuple[float, int, str]] = []
    order = 0
    last = Frame(0, 0.0, 0.0)

    def result(actor_id: int, since: float, duration: float) -> None:
        nonlocal order
        results.append((-duration, order, f"{fixed0(since):>8} {actor_id:>6} {names.get(actor_id, ''):<35} "
                                          f"{fixed0(duration):>10}\n"))
        order += 1

    for frame in recording.frames:
        last = frame
        for packet_id, records in frame.packets:
            if packet_id == EVENT_ADD:
                for add in records:
                    names[add.id] = add.blueprint
                    state[add.id] = [(0.0, 0.0, 0.0), 0.0, 0.0]
            elif packet_id == POSITION:
                for actor_id, x, y, z, *_ in records:
                    entry = state.setdefault(actor_id, [(0.0, 0.0, 0.0), 0.0, 0.0])
                    if math.dist(entry[0], (x, y, z)) < min_distance:
                        if entry[2] == 0:
                            entry[1] = frame.elapsed
                        entry[2] += max(frame.duration, 0.0)
                    else:
                        if entry[2] >= min_time:
                            result(actor_id, entry[1], entry[2])
                        entry[0], entry[2] = (x, y, z), 0.0
    for actor_id, (_, since, duration) in state.items():
        if duration >= min_time:
            result(actor_id, since, duration)
    out.extend(line for _, _, line in sorted(results))
    out.append(_problem_line(recording))
    out.append(f"\nFrames: {last.id}\nDuration: {g(last.elapsed)} seconds\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------------- replaying
def _pose(location_cm, rotation) -> np.ndarray:
    """A recorded location (cm) and (roll, pitch, yaw) as [x, y, z, pitch, yaw, roll] in metres."""
    x, y, z = location_cm
    roll, pitch, yaw = rotation
    return np.array([x / CM, y / CM, z / CM, pitch, yaw, roll], dtype=float)


def _lerp(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    out = a + (b - a) * fraction
    out[3:6] = a[3:6] + np.array([wrap_angle(float(d)) for d in (b[3:6] - a[3:6])]) * fraction
    return out


class Replayer:
    """A log being replayed into a world: its actors spawned (or reused), moved to the recorded poses as the
    server ticks, removed when the log removes them."""

    def __init__(self, recording: Log, world, start: float, duration: float, follow_id: int,
                 time_factor: float, ignore_hero: bool, ignore_spectator: bool, offset: np.ndarray):
        self.log = recording
        self.world = world
        self.episode_id = world.episode_id
        total = recording.total_time
        if start < 0.0:
            start = max(total + start, 0.0)
        self.start = start
        self.stop_at = start + duration if duration > 0.0 else total
        self.follow_id = int(follow_id)
        self.time_factor = time_factor
        self.ignore_hero = ignore_hero
        self.ignore_spectator = ignore_spectator
        self.camera = offset  # the spectator's transform relative to the followed actor
        self.times = [frame.elapsed for frame in recording.frames]
        self.mapped: dict[int, int] = {}  # recorded id -> id in this world
        self.spawned: set[int] = set()  # ids this replay created
        self.heroes: set[int] = set()  # recorded ids of hero actors
        self.frozen: dict[int, bool] = {}  # traffic light id -> its recorded frozen flag (held frozen while replaying)
        self.next_event = 0  # index of the first frame whose events are not processed yet
        self.time = start
        self.finished = False

    # ---------------------------------------------------------------------------------------------- events
    def _events_to(self, time_now: float) -> None:
        while self.next_event < len(self.log.frames) and self.times[self.next_event] <= time_now + 1e-9:
            frame = self.log.frames[self.next_event]
            for packet_id, records in frame.packets:
                if packet_id == EVENT_ADD:
                    for add in records:
                        self._add(add)
                elif packet_id == EVENT_DEL:
                    for (actor_id,) in records:
                        self._remove(actor_id)
                elif packet_id == EVENT_PARENT:
                    for child, parent in records:
                        self._parent(child, parent)
            self.next_event += 1

    def _add(self, add: ActorAdd) -> None:
        world = self.world
        if add.attribute("role_name") == "hero":
            self.heroes.add(add.id)
            if self.ignore_hero:
                return
        if add.blueprint.startswith("traffic."):  # the map's own lights: the one with the recorded sign id or place
            sign = add.attribute("sign_id")
            for actor in world.actors.values():
                if actor.traffic_light is not None and (
                        actor.traffic_light.sign_id == sign if sign else
                        np.allclose(actor.transform[:3] * CM, add.location, atol=1.0)):
                    self.mapped[add.id] = actor.id
                    return
            log.info("replayer: no traffic light %s in map %s", sign or add.location, world.map_name)
            return
        if add.blueprint.startswith(("sensor.", "controller.")):
            return  # sensors and AI walker controllers are not replayed: nothing to see of them without a client
        existing = world.actors.get(add.id)
        if existing is not None and existing.blueprint.id == add.blueprint:
            self.mapped[add.id] = existing.id  # reused, as CARLA's replayer does
            actor = existing
        else:
            pose = _pose(add.location, add.rotation)
            parked = Transform(1.0e6 + 20.0 * add.id, 1.0e6, 0.0, 0.0, 0.0, 0.0)  # spawned away, then placed
            try:
                actor = world.spawn(add.blueprint, [[attr_id, attr_type, value]
                                                    for attr_type, attr_id, value in add.attributes], parked)
            except Exception as exc:  # noqa: BLE001 - an actor this server cannot make is skipped, as CARLA's
                log.warning("replayer: actor %d (%s) could not be created: %s", add.id, add.blueprint, exc)
                return
            actor.transform = pose
            self.mapped[add.id] = actor.id
            self.spawned.add(actor.id)
        if actor.kind in ("vehicle", "walker"):
            actor.simulate_physics = False  # the log moves it
            actor.velocity, actor.speed = np.zeros(3), 0.0

    def _remove(self, recorded_id: int) -> None:
        actor_id = self.mapped.pop(recorded_id, None)
        if actor_id is not None and actor_id in self.world.actors:
            try:
                self.world.destroy(actor_id)
            except Exception as exc:  # noqa: BLE001 - the spectator and the map's lights are never destroyed
                log.info("replayer: actor %d not destroyed: %s", actor_id, exc)
        self.spawned.discard(actor_id)

    def _parent(self, child: int, parent: int) -> None:
        world = self.world
        child_actor = world.actors.get(self.mapped.get(child, -1))
        parent_actor = world.actors.get(self.mapped.get(parent, -1))
        if child_actor is not None and parent_actor is not None:
            child_actor.parent = parent_actor
            child_actor.relative = relative_to(parent_actor.transform, child_actor.transform)

    # ----------------------------------------------------------------------------------------------- poses
    def _frame_index(self, time_now: float) -> int:
        return max(bisect.bisect_right(self.times, time_now + 1e-9) - 1, 0)

    def apply(self, time_now: float, dt: float) -> None:
        """Events up to `time_now`, then every mapped actor at its pose at `time_now`: between the recorded frames
        around it, interpolated (the pose of the frame itself with a time factor of 2 or more, as CARLA's)."""
        self._events_to(time_now)
        if not self.log.frames:
            return
        k = self._frame_index(time_now)
        frame = self.log.frames[k]
        here = frame.positions()
        there, fraction = {}, 0.0
        if k + 1 < len(self.log.frames) and self.time_factor < 2.0:
            following = self.log.frames[k + 1]
            span = following.elapsed - frame.elapsed
            if span > 0.0:
                fraction = min(max((time_now - frame.elapsed) / span, 0.0), 1.0)
                there = following.positions() if fraction > 1e-9 else {}
        world = self.world
        for recorded_id, record in here.items():
            actor = world.actors.get(self.mapped.get(recorded_id, -1))
            if actor is None or (self.ignore_hero and recorded_id in self.heroes):
                continue
            if self.ignore_spectator and actor is world.spectator:
                continue
            pose = _pose(record[:3], record[3:6])
            if recorded_id in there:
                pose = _lerp(pose, _pose(there[recorded_id][:3], there[recorded_id][3:6]), fraction)
            if actor.parent is not None:
                continue  # attached actors follow their parent
            if dt > 0.0 and actor.kind in ("vehicle", "walker"):
                actor.velocity = (pose[:3] - actor.transform[:3]) / dt
                heading = math.radians(pose[4])
                actor.speed = float(actor.velocity[0] * math.cos(heading) + actor.velocity[1] * math.sin(heading))
            actor.transform = pose
        for packet_id, records in frame.packets:
            if packet_id == STATE:
                for recorded_id, frozen, elapsed, state in records:
                    actor = world.actors.get(self.mapped.get(recorded_id, -1))
                    if actor is not None and actor.traffic_light is not None and state <= 4:
                        light = actor.traffic_light
                        light.state, light.elapsed = int(state), float(elapsed)
                        light.frozen = True  # held at the log's state between frames; the log's own flag on stop
                        self.frozen[actor.id] = bool(frozen)
            elif packet_id == ANIM_VEHICLE:
                for recorded_id, steer, throttle, brake, hand, gear in records:
                    actor = world.actors.get(self.mapped.get(recorded_id, -1))
                    if actor is not None and actor.kind == "vehicle" and not (
                            self.ignore_hero and recorded_id in self.heroes):
                        actor.vehicle_control = VehicleControl(throttle, steer, brake, bool(hand), gear < 0, False,
                                                               int(gear))
            elif packet_id == ANIM_WALKER:
                for recorded_id, speed in records:
                    actor = world.actors.get(self.mapped.get(recorded_id, -1))
                    if actor is not None and actor.kind == "walker":
                        control = actor.walker_control
                        heading = math.radians(actor.transform[4])
                        control.direction = np.array([math.cos(heading), math.sin(heading), 0.0])
                        control.speed = float(speed)
            elif packet_id == VEHICLE_LIGHT:
                for recorded_id, state in records:
                    actor = world.actors.get(self.mapped.get(recorded_id, -1))
                    if actor is not None and actor.kind == "vehicle":
                        actor.light_state = int(state)
        if self.follow_id:
            target = world.actors.get(self.mapped.get(self.follow_id, -1))
            if target is not None:
                world.spectator.transform = compose(target.transform, self.camera)

    def finish(self, keep_actors: bool) -> None:
        """Stop: the lights run on from the log's state; with `keep_actors` the replayed vehicles and walkers stay
        (vehicles with physics on, walkers standing), else the actors this replay spawned are destroyed."""
        world = self.world
        for actor_id, frozen in self.frozen.items():
            if actor_id in world.actors:
                world.actors[actor_id].traffic_light.frozen = frozen
        mapped = [world.actors[i] for i in self.mapped.values() if i in world.actors]
        if keep_actors:
            for actor in mapped:
                if actor.kind == "vehicle":
                    actor.simulate_physics = True
                elif actor.kind == "walker":
                    actor.simulate_physics = True
                    actor.velocity = np.zeros(3)
                    actor.walker_control.speed = 0.0
        else:
            for actor_id in sorted(self.spawned):
                if actor_id in world.actors:
                    try:
                        world.destroy(actor_id)
                    except Exception as exc:  # noqa: BLE001
                        log.info("replayer: actor %d not destroyed: %s", actor_id, exc)
        self.finished = True


# ------------------------------------------------------------------------------------------------------ service
class Recorder:
    """The recorder and replayer of one server (what CARLA's `ACarlaRecorder` is to its episode)."""

    def __init__(self):
        self.writer: Writer | None = None
        self.replayer: Replayer | None = None
        self.time_factor = 1.0
        self.ignore_hero = False
        self.ignore_spectator = True  # CARLA's default
        self._autoplay: dict | None = None  # a replay waiting for its map to load

    # -------------------------------------------------------------------------------------------- recording
    def start(self, world, name: str, additional_data: bool = False) -> str:
        """Start recording `world` into `name` (see `recorder_path`); returns the file's full path. Stops a replay
        and any recording in course, as CARLA does; a name `recorder_path` refuses (ValueError) stops nothing."""
        path = recorder_path(name)
        if self.replayer is not None:
            self.stop_replayer(world, keep_actors=False)
        self.stop()
        try:
            self.writer = Writer(path, world, bool(additional_data))
        except OSError as exc:
            raise OSError(f"start_recorder: could not open {path}: {exc.strerror or exc}") from exc
        return str(path)

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def after_tick(self, world, contacts, dt: float) -> None:
        """Called by the server after each tick: writes the tick's frame while recording."""
        writer = self.writer
        if writer is None:
            return
        if world.episode_id != writer.episode_id:
            log.warning("recorder: the map changed (episode %d), so the recording %s stops at frame %d",
                        world.episode_id, writer.path, writer.frame_id)
            self.stop()
            return
        try:
            writer.write_frame(world, contacts, dt)
        except OSError as exc:
            log.error("recorder: writing %s failed (%s); the recording stops at frame %d", writer.path, exc,
                      writer.frame_id)
            self.stop()

    # -------------------------------------------------------------------------------------------- replaying
    def replay(self, world, name: str, start: float, duration: float, follow_id: int,
               replay_sensors: bool = False, offset=None, load_map: Callable[[str], None] | None = None) -> str:
        """`replay_file`: CARLA's text; the replay begins now (its first poses are in the next tick's state), or
        after the recorded map has loaded when the world has another one."""
        if self.replayer is not None:
            self.stop_replayer(world, keep_actors=True)
        self.stop()
        try:
            path = recorder_path(name)
        except ValueError as exc:
            return f"{exc}\n"
        lines = [f"Replaying File: {path}\n"]
        if not path.is_file():
            return "".join(lines) + f"File {path} not found on server\n"
        try:
            recording = read_log(path)
        except RecorderFileError as exc:
            return "".join(lines) + f"{exc}\n"
        if recording.problem is not None:
            lines.append(_problem_line(recording))
        # the 0.9.16 client's `offset`: where the spectator follows `follow_id` from (CARLA's 10 m behind, 5 m up,
        # looking 25 degrees down when not given)
        camera = FOLLOW_CAMERA if offset is None else np.array(Transform.from_msg(offset).as_tuple())
        settings = dict(start=float(start), duration=float(duration), follow_id=int(follow_id),
                        time_factor=self.time_factor, ignore_hero=self.ignore_hero,
                        ignore_spectator=self.ignore_spectator, offset=camera)
        if recording.map_name != world.map_name:
            if load_map is None:
                return "".join(lines) + f"Could not load mapfile {recording.map_name}\n"
            try:
                load_map(recording.map_name)
            except Exception:  # noqa: BLE001 - the map is not served here
                return "".join(lines) + f"Could not load mapfile {recording.map_name}\n"
            lines.append(f"Loading map {recording.map_name}\n")
            lines.append("Replayer will start after map is loaded...\n")
            self._autoplay = dict(recording=recording, episode=world.episode_id, settings=settings)
        total = recording.total_time
        first = settings["start"] if settings["start"] >= 0.0 else max(total + settings["start"], 0.0)
        stop_at = first + settings["duration"] if settings["duration"] > 0.0 else total
        lines.append(f"Total time recorded: {g(total)}\n")
        lines.append(f"Replaying from {g(first)} s - {g(stop_at)} s ({g(total)} s) at {self.time_factor:.1f}x\n")
        if self.ignore_hero:
            lines.append("Ignoring Hero vehicle\n")
        if self.ignore_spectator:
            lines.append("Ignoring Spectator camera\n")
        if self._autoplay is None:
            self._begin(world, recording, settings)
        return "".join(lines)

    def _begin(self, world, recording: Log, settings: dict) -> None:
        self.replayer = Replayer(recording, world, **settings)
        self.replayer.apply(self.replayer.time, 0.0)

    def before_tick(self, world, dt: float) -> None:
        """Called by the server before each tick: moves the replayed actors to the log's poses at the replay's time
        after this tick (so that the tick's state shows them there)."""
        if self._autoplay is not None:
            if world.episode_id != self._autoplay["episode"] and world.map_name == self._autoplay["recording"].map_name:
                autoplay, self._autoplay = self._autoplay, None
                self._begin(world, autoplay["recording"], autoplay["settings"])
            return
        replayer = self.replayer
        if replayer is None:
            return
        if world is not replayer.world:  # the map changed under the replay
            self.replayer = None
            return
        if replayer.time >= replayer.stop_at - 1e-9:  # the last pose went out with the last tick: done, actors kept
            replayer.finish(keep_actors=True)
            self.replayer = None
            return
        replayer.time = min(replayer.time + dt * replayer.time_factor, replayer.stop_at)
        replayer.apply(replayer.time, dt)

    def set_time_factor(self, factor: float) -> None:
        self.time_factor = float(factor)
        if self.replayer is not None:
            self.replayer.time_factor = self.time_factor

    def set_ignore_hero(self, ignore: bool) -> None:
        self.ignore_hero = bool(ignore)
        if self.replayer is not None:
            self.replayer.ignore_hero = self.ignore_hero

    def set_ignore_spectator(self, ignore: bool) -> None:
        self.ignore_spectator = bool(ignore)
        if self.replayer is not None:
            self.replayer.ignore_spectator = self.ignore_spectator

    def stop_replayer(self, world, keep_actors: bool) -> None:
        self._autoplay = None
        if self.replayer is not None:
            if world is self.replayer.world:
                self.replayer.finish(bool(keep_actors))
            self.replayer = None
