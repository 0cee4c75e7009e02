"""Camera sensors: `sensor.camera.rgb`, `.depth` and `.semantic_segmentation` over CARLA's image stream.

Payload (LibCarla's ImageSerializer): the 48-byte sensor header (frame, timestamp, sensor transform), then
packed `<IIf` {width, height, fov} and width*height*4 bytes BGRA. Depth uses CARLA's encoding
`(R + G*256 + B*256^2) / (256^3 - 1) * 1000` m; semantic images carry the tag in R with G and B zero;
instance segmentation (`sensor.camera.instance_segmentation`, LibCarla 0.9.16's SensorRegistry position 15) carries
the tag in R and the id of the actor seen in G (low byte) and B (high byte), 0 for scenery, ground and sky (the
id's low 16 bits: ids from 65,536 on wrap round).
The classes are registered in `sensors._MODELS`; they subclass `sensor_model.SensorModel`.
"""
from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from .protocol import SENSOR_TYPE_ID
from .render.raster import FAR, Intrinsics
from .render.renderer import renderer_for
from .sensor_model import SensorModel, number

IMAGE_HEADER = struct.Struct("<IIf")
MAX_SIDE = 8192  # pixels; CARLA's cameras have no documented cap, this keeps one frame under 256 MiB
OPAQUE = np.uint32(255 << 24)


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W) uint32 whose little-endian bytes are CARLA's depth BGRA."""
    n = np.round(np.clip(depth, 0.0, FAR) / FAR * (256.0 ** 3 - 1.0)).astype(np.uint32)
    return (n >> 16) | (((n >> 8) & 255) << 8) | ((n & 255) << 16) | OPAQUE


def encode_semantic(tag: np.ndarray) -> np.ndarray:
    """(H, W) uint8 tags -> (H, W) uint32 whose bytes are BGRA with the tag in R."""
    return (tag.astype(np.uint32) << 16) | OPAQUE


def encode_instance(tag: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """(H, W) tags and actor ids -> (H, W) uint32 whose bytes are BGRA: B = id >> 8, G = id & 255, R = tag."""
    ids = owner.astype(np.uint32) & 0xFFFF
    return (ids >> 8) | ((ids & 255) << 8) | (tag.astype(np.uint32) << 16) | OPAQUE


def encode_color(bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (H, W, 4) uint8 BGRA; BGRA (the renderer's output) passes through as is."""
    if bgr.shape[-1] == 4:
        return bgr
    out = np.empty(bgr.shape[:2] + (4,), np.uint8)
    out[..., :3] = bgr
    out[..., 3] = 255
    return out


class CameraSensor(SensorModel):
    """A pinhole camera attached to a parent; subclasses choose what the pixels hold."""

    def __init__(self, attribute: Callable[[str, str], str]):
        super().__init__(attribute)
        width = int(number(attribute, "image_size_x", "800"))
        height = int(number(attribute, "image_size_y", "600"))
        fov = number(attribute, "fov", "90")
        for name, side in (("image_size_x", width), ("image_size_y", height)):
            if not 0 < side <= MAX_SIDE:
                raise ValueError(f"attribute '{name}' = {side} is out of range: must be 1..{MAX_SIDE} pixels")
        if not 0.0 < fov < 180.0:
            raise ValueError(f"attribute 'fov' = {fov:g} is out of range: must be more than 0 and less than 180 "
                             "degrees")
        self.intr = Intrinsics(width, height, fov)
        self.shots = 0  # images produced so far: seeds per-image noise (rain) independently of server uptime

    def pixels(self, world, actor) -> np.ndarray:
        raise NotImplementedError

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        if not self.due(world.elapsed):
            return []
        self.shots += 1
        body = IMAGE_HEADER.pack(self.intr.width, self.intr.height, self.intr.fov)
        return [header(self.type_id) + body + self.pixels(world, actor).tobytes()]


def _renderer(world):
    return renderer_for(world.network, world.map_name)


class RgbCamera(CameraSensor):
    type_id = SENSOR_TYPE_ID["sensor.camera.rgb"]

    def pixels(self, world, actor) -> np.ndarray:
        return encode_color(_renderer(world).color(world, actor, self.intr, (self.shots, actor.id)))


class DepthCamera(CameraSensor):
    type_id = SENSOR_TYPE_ID["sensor.camera.depth"]

    def pixels(self, world, actor) -> np.ndarray:
        return encode_depth(_renderer(world).geometry(world, actor.transform, self.intr).depth)


class SemanticCamera(CameraSensor):
    type_id = SENSOR_TYPE_ID["sensor.camera.semantic_segmentation"]

    def pixels(self, world, actor) -> np.ndarray:
        return encode_semantic(_renderer(world).geometry(world, actor.transform, self.intr).tag)


class InstanceSegmentationCamera(CameraSensor):
    type_id = 15  # AInstanceSegmentationCamera's position in LibCarla 0.9.16's SensorRegistry

    def pixels(self, world, actor) -> np.ndarray:
        geometry = _renderer(world).geometry(world, actor.transform, self.intr)
        return encode_instance(geometry.tag, geometry.owner)
