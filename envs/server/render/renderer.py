"""Per-map renderer: static scene + the actors of the current tick -> camera images.

One `Renderer` per road network (built when the server loads the map, `renderer_in_background`, or on first use;
kept until another map's replaces it: `renderer_for`). Within a tick
the actors' boxes and the lighting are built once and shared by all cameras, and a geometry pass is shared
by cameras with the same pose and intrinsics (e.g. RGB, depth and semantic cameras on one mount).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ..blueprints import TAG
from ..geometry import rotation_matrix
from ..traffic_lights import GREEN, RED, YELLOW
from . import shapes
from .boxes import FRONT, BoxBuilder, BoxSet
from .raster import Faces, Geometry, Intrinsics, render_geometry
from .scene import StaticScene, build_scene
from .shade import shade
from .weather import Lighting, lighting

LAMP_ON = {RED: (255, 40, 30), YELLOW: (255, 190, 20), GREEN: (40, 255, 120)}
LAMP_OFF = (35, 35, 35)
LAMP_ROWS = ((RED, 0.36), (YELLOW, 0.0), (GREEN, -0.36))  # state, height above the housing centre


def _actor_shape(actor) -> BoxSet | None:
    body = actor.blueprint.body
    if actor.kind == "vehicle":
        rgb = shapes.parse_rgb(actor.attribute("color"))
        return shapes.vehicle(body.extent, actor.attribute("base_type"), body.semantic_tag, rgb, actor.blueprint.id)
    if actor.kind == "walker":
        return shapes.walker(body.extent, actor.blueprint.id)
    if actor.kind == "prop":
        return shapes.prop(body.extent, actor.blueprint.id.split(".")[-1])
    return None


def _lamps(scene: StaticScene, sign_id: str, state) -> BoxSet:
    post = scene.lights.get(sign_id)
    if post is None:
        return BoxSet.empty()
    facing = np.radians(post.facing_yaw)
    out = np.array([np.cos(facing), np.sin(facing), 0.0])
    b = BoxBuilder()
    for lamp_state, dz in LAMP_ROWS:
        on = state == lamp_state
        b.add(post.head + out * 0.16 + (0, 0, dz), (0.03, 0.13, 0.13), LAMP_ON[lamp_state] if on else LAMP_OFF,
              TAG["traffic_light"], yaw=post.facing_yaw, emissive=(FRONT,) if on else ())
    return b.build()


@dataclass
class _Pending:
    """A geometry pass that one camera thread makes while others on the same mount wait."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    geometry: Geometry | None = None


@dataclass
class Renderer:
    scene: StaticScene
    _shapes: dict[tuple, BoxSet | None] = field(default_factory=dict)
    _lamp_sets: dict[tuple, BoxSet] = field(default_factory=dict)  # (sign id, state) -> lamp boxes
    _lamp_key: tuple | None = None  # the lamp states of `_lamp_boxes`
    _lamp_boxes: BoxSet = field(default_factory=BoxSet.empty)
    _actor_key: tuple | None = None  # the actor shapes (identities) of `_actor_local`
    _actor_local: BoxSet = field(default_factory=BoxSet.empty)  # every actor's boxes in its own frame
    _actor_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp))  # box -> actor row
    _tick_key: tuple = ()
    _tick_boxes: BoxSet = field(default_factory=BoxSet.empty)
    _tick_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # box -> actor id (0: scenery)
    _tick_faces: Faces = field(default_factory=lambda: Faces.of(BoxSet.empty()))
    _tick_light: Lighting | None = None
    _geometry: dict[tuple, _Pending] = field(default_factory=dict)  # this tick's geometry passes by camera pose
    _lock: threading.Lock = field(default_factory=threading.Lock)  # cameras render on several threads

    def _shape(self, actor) -> BoxSet | None:
        key = (actor.id, actor.blueprint.id, actor.attribute("color"))
        if key not in self._shapes:
            self._shapes[key] = _actor_shape(actor)
        return self._shapes[key]

    def _prepare(self, world) -> None:
        """Actor boxes and lighting of the world's current tick (rebuilt when the frame changes)."""
        key = (id(world), world.frame)
        with self._lock:
            if key != self._tick_key:
                self._prepare_tick(world, key)

    def _prepare_tick(self, world, key: tuple) -> None:
        lamps, movers = [], []
        for actor in world.actors.values():
            if actor.traffic_light is not None:
                lamps.append((actor.traffic_light.sign_id, actor.traffic_light.state))
                continue
            if actor.parent is not None:
                continue
            shape = self._shape(actor)
            if shape is not None and len(shape):
                movers.append((actor, shape))
        # Lamp boxes only change with the light states; actor boxes are placed all at once.
        lamp_key = tuple(lamps)
        if lamp_key != self._lamp_key:
            for lamp in lamps:
                if lamp not in self._lamp_sets:
                    self._lamp_sets[lamp] = _lamps(self.scene, *lamp)
            self._lamp_key, self._lamp_boxes = lamp_key, BoxSet.concat([self._lamp_sets[k] for k in lamps])
        actor_key = tuple(id(shape) for _, shape in movers)
        if actor_key != self._actor_key:
            self._actor_key = actor_key
            self._actor_local = BoxSet.concat([shape for _, shape in movers])
            self._actor_owner = np.repeat(np.arange(len(movers)), [len(shape) for _, shape in movers])
        sets = [self.scene.boxes, self._lamp_boxes]
        owners = [np.zeros(len(self.scene.boxes) + len(self._lamp_boxes), np.int64)]
        if movers:
            owners.append(np.array([actor.id for actor, _ in movers], np.int64)[self._actor_owner])
            local, owner = self._actor_local, self._actor_owner
            location = np.array([actor.transform[:3] for actor, _ in movers])[owner]
            rotation = np.array([rotation_matrix(*actor.transform[3:6]) for actor, _ in movers])[owner]
            sets.append(BoxSet(np.einsum("nij,nj->ni", rotation, local.center) + location,
                               np.matmul(rotation, local.rot), local.extent, local.color, local.tag, local.emissive))
        self._tick_key, self._tick_boxes = key, BoxSet.concat(sets)
        self._tick_owner = np.concatenate(owners)
        self._tick_faces = Faces.of(self._tick_boxes, self._tick_owner)
        self._tick_light = lighting(world.weather)
        self._geometry.clear()

    def boxes(self, world) -> tuple[BoxSet, np.ndarray]:
        """This tick's boxes as the cameras draw them (scenery, traffic-light lamps, every actor without a parent)
        and the id of the actor each belongs to (0: scenery): what the LiDAR, radar and obstacle sensors measure."""
        self._prepare(world)
        with self._lock:
            return self._tick_boxes, self._tick_owner

    def geometry(self, world, pose: np.ndarray, intr: Intrinsics) -> Geometry:
        """The geometry pass of a camera pose this tick, made once for all cameras on that mount (RGB, depth and
        semantic): a camera thread that finds another one making it waits for it."""
        self._prepare(world)
        key = (tuple(np.round(pose, 6)), intr)
        with self._lock:
            pending = self._geometry.setdefault(key, _Pending())
        with pending.lock:
            if pending.geometry is None:
                pending.geometry = render_geometry(self.scene.ground, self._tick_boxes, self._tick_faces,
                                                   np.asarray(pose[:3], float), rotation_matrix(*pose[3:6]), intr)
        return pending.geometry

    def color(self, world, sensor_actor, intr: Intrinsics, seed: tuple[int, ...]) -> np.ndarray:
        """(H, W, 4) uint8 BGRA image (alpha 255) seen by a camera actor; `seed` fixes its noise (rain)."""
        geo = self.geometry(world, sensor_actor.transform, intr)
        beams = []
        parent = sensor_actor.parent
        if parent is not None and parent.kind == "vehicle":
            forward = rotation_matrix(*parent.transform[3:6])[:, 0]
            front = parent.transform[:3] + forward * parent.blueprint.body.extent[0] + (0, 0, 0.7)
            beams.append((front, forward))
        return shade(geo, self._tick_light, beams, seed)


_RENDERERS: dict[int, tuple[object, Renderer]] = {}  # id(network) -> (network kept alive, renderer)
_RENDERERS_LOCK = threading.Lock()


_LATEST: list[int] = [0]  # id() of the network most recently asked for in the background


def renderer_for(network, name: str) -> Renderer:
    """The renderer of a road network, built on first use (a few seconds for a town) unless
    `renderer_in_background` has built it already; a caller during that build waits for it."""
    key = id(network)
    with _RENDERERS_LOCK:
        if key not in _RENDERERS:
            _RENDERERS.clear()  # one map at a time: a map change frees the previous scene's textures
            _RENDERERS[key] = (network, Renderer(build_scene(network, name)))
        return _RENDERERS[key][1]


def renderer_in_background(network, name: str) -> threading.Thread:
    """Start building the renderer of a map that was just loaded, on a thread of its own, so that the first camera
    frame does not stall the server for the seconds a town's scene takes (CARLA's examples wait 2 s for a frame).
    A build that a newer map supersedes before it starts is skipped."""
    _LATEST[0] = id(network)

    def build() -> None:
        # (not at a lower priority: a camera or get_level_bbs that needs the scene waits for this thread, and a
        # lowered thread on a loaded machine would make it wait many times the build's few seconds)
        if _LATEST[0] == id(network):
            renderer_for(network, name)

    thread = threading.Thread(target=build, name=f"scene-{name}", daemon=True)
    thread.start()
    return thread
