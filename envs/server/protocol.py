"""CARLA 0.9.16 wire encodings: msgpack-RPC structs and the packed binary stream payloads.

Everything here mirrors LibCarla's `MSGPACK_DEFINE_ARRAY` field orders and `#pragma pack(1)` layouts, as read
from CARLA 0.9.16's source (github.com/carla-simulator/carla: `LibCarla/source/carla/rpc/*.h` for the RPC
structs, `LibCarla/source/carla/sensor/s11n/*Serializer.h` for the sensor payloads,
`LibCarla/source/carla/streaming/detail/Token.h` for the stream token) over rpclib's msgpack-RPC. The stock
`carla` client is the judge: each layout is covered by a test that drives the real client against the server.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

CARLA_VERSION = "0.9.16"
WORLD_OBSERVER_STREAM = 1  # the first episode's state stream; each later episode gets a fresh id (World)

# Sensor type ids: the order of the 0.9.16 sensor registry (changes between CARLA versions).
SENSOR_TYPE_ID = {
    "sensor.other.collision": 0,
    "sensor.camera.depth": 1,
    "sensor.other.gnss": 4,
    "sensor.other.imu": 5,
    "sensor.camera.rgb": 13,
    "sensor.camera.semantic_segmentation": 14,
}
EPISODE_STATE_TYPE_ID = 17

# ActorAttributeType
ATTR_BOOL, ATTR_INT, ATTR_FLOAT, ATTR_STRING, ATTR_RGB = 1, 2, 3, 4, 5

# EpisodeState simulation_state bits
SIM_STATE_NONE, SIM_STATE_MAP_CHANGE = 0, 1


# ---------------------------------------------------------------------------------------------- RPC structs
def finite(value, what: str) -> float:
    """`value` as a float, refused (ValueError, which the server answers as the call's error) when it is NaN or
    infinite: a NaN pose fails every comparison, so an actor placed at one is never in contact with anything."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number}, not a finite number")
    return number


@dataclass
class Transform:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0

    def to_msg(self) -> list:
        return [[float(self.x), float(self.y), float(self.z)], [float(self.pitch), float(self.yaw), float(self.roll)]]

    @classmethod
    def from_msg(cls, msg) -> Transform:
        (x, y, z), (pitch, yaw, roll) = msg
        names = ("location.x", "location.y", "location.z", "rotation.pitch", "rotation.yaw", "rotation.roll")
        return cls(*(finite(v, f"transform {n}") for n, v in zip(names, (x, y, z, pitch, yaw, roll))))

    def as_tuple(self) -> tuple[float, float, float, float, float, float]:
        return (self.x, self.y, self.z, self.pitch, self.yaw, self.roll)


def vector3(msg, what: str = "vector") -> np.ndarray:
    x, y, z = msg
    return np.array([finite(x, f"{what}.x"), finite(y, f"{what}.y"), finite(z, f"{what}.z")])


def vector_msg(v) -> list[float]:
    return [float(v[0]), float(v[1]), float(v[2])]


def bounding_box_msg(location, extent, rotation=(0.0, 0.0, 0.0), actor_id: int = 0) -> list:
    return [vector_msg(location), vector_msg(extent), vector_msg(rotation), int(actor_id)]


@dataclass
class EpisodeSettings:
    synchronous_mode: bool = False
    no_rendering_mode: bool = False
    fixed_delta_seconds: float | None = None
    substepping: bool = True
    max_substep_delta_time: float = 0.01
    max_substeps: int = 10
    max_culling_distance: float = 0.0
    deterministic_ragdolls: bool = True
    tile_stream_distance: float = 3000.0
    actor_active_distance: float = 2000.0
    spectator_as_ego: bool = True

    def to_msg(self) -> list:
        delta = [False] if self.fixed_delta_seconds is None else [True, float(self.fixed_delta_seconds)]
        return [
            bool(self.synchronous_mode), bool(self.no_rendering_mode), delta, bool(self.substepping),
            float(self.max_substep_delta_time), int(self.max_substeps), float(self.max_culling_distance),
            bool(self.deterministic_ragdolls), float(self.tile_stream_distance), float(self.actor_active_distance),
            bool(self.spectator_as_ego),
        ]

    @classmethod
    def from_msg(cls, msg) -> EpisodeSettings:
        if not isinstance(msg, (list, tuple)) or len(msg) < 11:
            raise ValueError("EpisodeSettings must be an array of 11 fields")
        delta = msg[2]
        fixed = finite(delta[1], "fixed_delta_seconds") if delta and delta[0] else None
        if fixed is not None and fixed <= 0.0:
            raise ValueError(f"fixed_delta_seconds must be positive, got {fixed}")
        return cls(bool(msg[0]), bool(msg[1]), fixed, bool(msg[3]), finite(msg[4], "max_substep_delta_time"),
                   int(msg[5]), finite(msg[6], "max_culling_distance"), bool(msg[7]),
                   finite(msg[8], "tile_stream_distance"), finite(msg[9], "actor_active_distance"), bool(msg[10]))


WEATHER_FIELDS = (
    "cloudiness", "precipitation", "precipitation_deposits", "wind_intensity", "sun_azimuth_angle",
    "sun_altitude_angle", "fog_density", "fog_distance", "fog_falloff", "wetness", "scattering_intensity",
    "mie_scattering_scale", "rayleigh_scattering_scale", "dust_storm",
)


@dataclass
class Weather:
    """carla.WeatherParameters; defaults are CARLA's 'ClearNoon'."""

    cloudiness: float = 5.0
    precipitation: float = 0.0
    precipitation_deposits: float = 0.0
    wind_intensity: float = 10.0
    sun_azimuth_angle: float = -1.0
    sun_altitude_angle: float = 45.0
    fog_density: float = 2.0
    fog_distance: float = 0.75
    fog_falloff: float = 0.1
    wetness: float = 0.0
    scattering_intensity: float = 1.0
    mie_scattering_scale: float = 0.03
    rayleigh_scattering_scale: float = 0.0331
    dust_storm: float = 0.0

    def to_msg(self) -> list[float]:
        return [float(getattr(self, name)) for name in WEATHER_FIELDS]

    @classmethod
    def from_msg(cls, msg) -> Weather:
        if not isinstance(msg, (list, tuple)) or len(msg) != len(WEATHER_FIELDS):
            raise ValueError(f"WeatherParameters must be an array of {len(WEATHER_FIELDS)} numbers")
        return cls(*(finite(v, name) for name, v in zip(WEATHER_FIELDS, msg)))


@dataclass
class VehicleControl:
    throttle: float = 0.0
    steer: float = 0.0
    brake: float = 0.0
    hand_brake: bool = False
    reverse: bool = False
    manual_gear_shift: bool = False
    gear: int = 0

    @classmethod
    def from_msg(cls, msg) -> VehicleControl:
        t, s, b, hb, rev, manual, gear = msg
        t, s, b = finite(t, "throttle"), finite(s, "steer"), finite(b, "brake")  # clamping would keep a NaN
        return cls(min(max(t, 0.0), 1.0), min(max(s, -1.0), 1.0), min(max(b, 0.0), 1.0),
                   bool(hb), bool(rev), bool(manual), int(gear))


@dataclass
class WalkerControl:
    direction: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    speed: float = 0.0
    jump: bool = False

    @classmethod
    def from_msg(cls, msg) -> WalkerControl:
        direction, speed, jump = msg
        return cls(vector3(direction, "direction"), max(finite(speed, "speed"), 0.0), bool(jump))


def response(value) -> list:
    """`Response<T>` success: a one-field array holding the variant `[1, value]`."""
    return [[1, value]]


def response_void() -> list:
    """`Response<void>` success: a one-field array holding an empty `optional<ResponseError>`."""
    return [[False]]


def response_error(message: str, void: bool) -> list:
    """`Response<T>` error is the variant `[0, ResponseError]`; `Response<void>` error the optional `[true, ...]`."""
    return [[True, [message]]] if void else [[0, [message]]]


# ------------------------------------------------------------------------------------ streaming payloads
def stream_token(stream_id: int, port: int) -> bytes:
    """24-byte packed token: u32 stream id, u16 port, u8 protocol (tcp=1), u8 address type (not_set: the
    client reuses the RPC host), 16 bytes of address."""
    return struct.pack("<IHBB16s", stream_id, port, 1, 0, b"\0" * 16)


SENSOR_HEADER = struct.Struct("<QQd6f")  # type id, frame, timestamp, sensor transform: 48 bytes


def sensor_header(type_id: int, frame: int, timestamp: float, transform: Transform) -> bytes:
    return SENSOR_HEADER.pack(type_id, frame, timestamp, *transform.as_tuple())


EPISODE_HEADER = struct.Struct("<Qdf3iI")  # 36 bytes
SIM_STATE_OFFSET = SENSOR_HEADER.size + EPISODE_HEADER.size - 4  # the u32 simulation_state bits in a state payload


def with_map_change(payload: bytes) -> bytes:
    """An episode state payload with its map-change bit set (the client then fetches the map again)."""
    (bits,) = struct.unpack_from("<I", payload, SIM_STATE_OFFSET)
    flagged = bytearray(payload)
    struct.pack_into("<I", flagged, SIM_STATE_OFFSET, bits | SIM_STATE_MAP_CHANGE)
    return bytes(flagged)

_VEHICLE_DATA = np.dtype([
    ("throttle", "<f4"), ("steer", "<f4"), ("brake", "<f4"), ("hand_brake", "u1"), ("reverse", "u1"),
    ("manual_gear_shift", "u1"), ("gear", "<i4"), ("speed_limit", "<f4"), ("traffic_light_state", "u1"),
    ("has_traffic_light", "u1"), ("traffic_light_id", "<u4"), ("failure_state", "u1"),
])
_WALKER_DATA = np.dtype([("direction", "<f4", 3), ("speed", "<f4"), ("jump", "u1")])
_TRAFFIC_LIGHT_DATA = np.dtype([
    ("sign_id", "S32"), ("green_time", "<f4"), ("yellow_time", "<f4"), ("red_time", "<f4"),
    ("elapsed_time", "<f4"), ("pole_index", "<u4"), ("time_is_frozen", "u1"), ("state", "u1"),
])
_STATE_UNION = np.dtype({
    "names": ["vehicle", "walker", "traffic_light"],
    "formats": [_VEHICLE_DATA, _WALKER_DATA, _TRAFFIC_LIGHT_DATA],
    "offsets": [0, 0, 0],
    "itemsize": 54,
})
ACTOR_DYNAMIC_STATE = np.dtype([
    ("id", "<u4"), ("actor_state", "u1"), ("transform", "<f4", 6), ("velocity", "<f4", 3),
    ("angular_velocity", "<f4", 3), ("acceleration", "<f4", 3), ("data", _STATE_UNION),
])
assert ACTOR_DYNAMIC_STATE.itemsize == 119, ACTOR_DYNAMIC_STATE.itemsize
ACTOR_STATE_ACTIVE = 1
