"""One actor's behaviour: its steps run in order, each gated by triggers, each tick turned into one control.

Walkers get a `WalkerControl` every tick (CARLA walkers keep the last one otherwise). Vehicles follow a
`LanePath` with pure pursuit and an IDM gap; a vehicle that holds still keeps its brakes on. A step ends
by its own completion (distance walked or driven, lane change done, stopped) or by its `until` trigger;
after the last step the actor holds still. Every start and finish is recorded as an event.
A `lights` step switches a vehicle's lights and ends at once; a `door` step swings a door panel that the runner
spawned against the vehicle's side (listed in `owned`, so that the scenario destroys it with its actors).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import carla
import numpy as np

from control import IDM, SpeedController, pure_pursuit
from envs.server.blueprints import BY_ID

from .compile import CompiledActor
from .lane_path import LanePath
from .lights import LightIndex, hold_group
from .schema import VEHICLE_LIGHTS, Step
from .triggers import TriggerContext, fires

STOPPED_MPS = 0.1
# A vehicle's door is a panel prop spawned against its side, hinged at its front edge. The blueprint library has
# no door (nor a way to grow a body's box): a street barrier (1.8 x 0.4 x 1.1 m) is the nearest panel to one.
DOOR_BLUEPRINT = "static.prop.streetbarrier"
DOOR_GAP_M = 0.05  # between the closed door and the body
GAP_CORRIDOR_M = 1.8  # lateral half-width in which another actor counts as "ahead in my lane"
LIGHT_STOP_MARGIN_M = 3.0
NPC_IDM = IDM()


@dataclass
class ScenarioEvent:
    frame: int
    time: float
    actor: str
    step: int
    name: str | None
    primitive: str
    what: str  # started | finished
    location: tuple[float, float, float]

    @property
    def key(self) -> str | None:
        return f"{self.actor}.{self.name}.{self.what}" if self.name else None


@dataclass
class World:
    """What every runner may read this tick."""
    world_map: carla.Map
    snapshot: carla.WorldSnapshot
    lights: LightIndex
    others: np.ndarray  # (N, 5) id, x, y, vx, vy of every vehicle and walker


class ActorRunner:
    def __init__(self, spec: CompiledActor, actor: carla.Actor, world_map: carla.Map) -> None:
        self.spec, self.actor = spec, actor
        self.index = -1  # the step running now; -1 before the first tick
        self.step_start = 0.0
        self.walk_origin: carla.Location | None = None
        self.driven = 0.0
        self.last_location: carla.Location | None = None
        self.ignore_lights = False
        self.held_speed = 0.0  # change_lane without a speed keeps the speed it started with
        self.speed_control = SpeedController()
        self.path: LanePath | None = None
        self.wheelbase = 1.2 * actor.bounding_box.extent.x  # about 60 % of the body length
        self.half_length = actor.bounding_box.extent.x
        self.owned: dict[str, int] = {}  # actors this runner spawned itself (its doors), by name: id
        # side -> [panel actor, its angle now (deg), the angle it swings from, (half length, half thickness)]
        self.doors: dict[str, list] = {}
        sides = sorted({step.params.side for step in spec.steps if step.primitive == "door"})
        if sides:
            self._spawn_doors(sides)
        if spec.kind == "vehicle":
            start = world_map.get_waypoint(spec.transform.location, project_to_road=True, lane_type=carla.LaneType.Any)
            # the path is laid 40 m ahead at once: with the turn of the first step that drives, so that a vehicle
            # standing close to a junction takes the turn its file asks for there
            turn = next((s.params.turn for s in spec.steps if s.primitive in ("follow_lane", "run_red_light")),
                        "straight")
            self.path = LanePath(start, turn)

    # --------------------------------------------------------------------------------------------- doors
    def _spawn_doors(self, sides: list[str]) -> None:
        world = self.actor.get_world()
        blueprint = world.get_blueprint_library().find(DOOR_BLUEPRINT)
        if blueprint.has_attribute("role_name"):
            blueprint.set_attribute("role_name", "scenario")
        for side in sides:
            extent = BY_ID[DOOR_BLUEPRINT].body.extent  # the library's box, the same as CARLA's prop's
            self.doors[side] = [None, 0.0, 0.0, (extent[0], extent[1])]
            transform = self._door_transform(side, 0.0)
            panel = world.try_spawn_actor(blueprint, transform)
            if panel is None:
                for spawned in self.owned.values():
                    world.get_actor(spawned).destroy()
                loc = transform.location
                raise RuntimeError(f"scenario actor '{self.spec.id}': its {side} door could not be spawned at "
                                   f"({loc.x:.1f}, {loc.y:.1f}); move the vehicle away from what stands there")
            self.doors[side][0] = panel
            self.owned[f"{self.spec.id}.door_{side}"] = panel.id

    def _door_transform(self, side: str, angle: float) -> carla.Transform:
        """The panel's pose with the door `angle` degrees open: hinged at its inner front corner, at the body's side
        (closed, the panel lies along the body, centred on it), its free end swinging outwards."""
        half_len, half_thick = self.doors[side][3]
        body = self.spec.transform
        a = math.radians(angle)
        out = -1.0 if side == "left" else 1.0  # the body's left is its -y (CARLA's frame is left-handed)
        hinge = (half_len, out * (self.actor.bounding_box.extent.y + DOOR_GAP_M))
        along = (-math.cos(a), out * math.sin(a))  # from the hinge to the free end
        normal = (math.sin(a), out * math.cos(a))  # outwards, across the panel
        lx = hinge[0] + along[0] * half_len + normal[0] * half_thick
        ly = hinge[1] + along[1] * half_len + normal[1] * half_thick
        yaw = math.radians(body.rotation.yaw)
        location = body.location + carla.Location(x=lx * math.cos(yaw) - ly * math.sin(yaw),
                                                  y=lx * math.sin(yaw) + ly * math.cos(yaw))
        return carla.Transform(location, carla.Rotation(yaw=body.rotation.yaw + out * -angle))

    def _swing_door(self, step_time: float, finished: bool = False) -> None:
        p = self.step.params
        door = self.doors[p.side]
        share = 1.0 if finished else min(step_time / float(p.swing_s), 1.0)
        door[1] = door[2] + (float(p.angle) - door[2]) * share
        door[0].set_transform(self._door_transform(p.side, door[1]))

    @property
    def step(self) -> Step | None:
        return self.spec.steps[self.index] if 0 <= self.index < len(self.spec.steps) else None

    # ------------------------------------------------------------------------------------------ stepping
    def tick(self, ctx: TriggerContext, w: World, events: list[ScenarioEvent]) -> carla.command.Command | None:
        state = w.snapshot.find(self.actor.id)
        if state is None:
            return None
        transform, velocity = state.get_transform(), state.get_velocity()
        speed = math.hypot(velocity.x, velocity.y)
        location = transform.location
        if self.last_location is not None:
            self.driven += location.distance_2d(self.last_location)
        self.last_location = location
        ctx.step_time = ctx.time - self.step_start
        if self.index == -1 or (self.step is not None and self._finished(ctx, speed, location)):
            self._advance(ctx, w, events, location, speed)
        elif self.step is not None and self.step.primitive == "door":
            self._swing_door(ctx.step_time)
        if self.spec.kind == "walker":
            return self._walker_control(ctx)
        if self.spec.kind == "vehicle":
            return self._vehicle_control(w, transform, speed)
        return None

    def _finished(self, ctx: TriggerContext, speed: float, location: carla.Location) -> bool:
        step = self.step
        if step.until is not None and fires(step.until, ctx):
            return True
        p = step.params
        if step.primitive == "wait":
            return fires(p, ctx)
        if step.primitive in ("walk", "cross"):
            limit = p.distance if p.distance is not None or step.primitive == "walk" else self.spec.cross_distance
            return limit is not None and self.walk_origin.distance_2d(location) >= limit
        if step.primitive in ("follow_lane", "change_lane"):
            return p.distance is not None and self.driven >= p.distance
        if step.primitive in ("brake", "stop"):
            return speed < STOPPED_MPS
        if step.primitive == "lights":
            return True
        if step.primitive == "door":
            return ctx.step_time >= p.swing_s
        return False  # run_red_light and idle last until `until`

    def _advance(self, ctx: TriggerContext, w: World, events: list[ScenarioEvent], location: carla.Location,
                 speed: float) -> None:
        frame = w.snapshot.frame
        where = (round(location.x, 2), round(location.y, 2), round(location.z, 2))
        if self.step is not None:
            step = self.step
            if step.primitive == "door":  # the door ends exactly where the step asked
                self._swing_door(ctx.step_time, finished=True)
            events.append(ScenarioEvent(frame, ctx.time, self.spec.id, self.index, step.name, step.primitive,
                                        "finished", where))
            ctx.events.add(f"{self.spec.id}.{step.name}.finished")
        self.index += 1
        self.step_start, self.driven, self.walk_origin = ctx.time, 0.0, location
        step = self.step
        if step is None:
            return
        events.append(ScenarioEvent(frame, ctx.time, self.spec.id, self.index, step.name, step.primitive,
                                    "started", where))
        ctx.events.add(f"{self.spec.id}.{step.name}.started")
        p = step.params
        if step.primitive in ("follow_lane", "run_red_light"):
            if p.turn != self.path.turn:  # another turn than the path was laid with: lay it again from here
                here = w.world_map.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Any)
                self.path = LanePath(here, p.turn)
            self.ignore_lights = step.primitive == "run_red_light" or not p.obey_lights
        if step.primitive == "change_lane":
            here = w.world_map.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Any)
            if not self.path.change_lane(here, p.direction, p.distance):
                raise RuntimeError(f"scenario actor '{self.spec.id}': no lane to the {p.direction} at "
                                   f"({location.x:.1f}, {location.y:.1f}) for change_lane")
            self.held_speed = speed
        if step.primitive == "run_red_light":
            _, light = w.lights.first_on_path(self.path.as_array())
            if light is not None:
                hold_group(light, carla.TrafficLightState.Red)
        if step.primitive == "door":
            self.doors[p.side][2] = self.doors[p.side][1]  # swing from where it stands
        if step.primitive == "lights":
            self.actor.set_light_state(carla.VehicleLightState(
                sum(int(getattr(carla.VehicleLightState, VEHICLE_LIGHTS[name])) for name in set(p.state))))
        # Repeat the step's check at once so that a trigger already true (or a switch of lights) does not cost a tick.
        if (step.primitive == "wait" and fires(p, ctx)) or step.primitive == "lights":
            self._advance(ctx, w, events, location, speed)

    # ------------------------------------------------------------------------------------------ controls
    def _walker_control(self, ctx: TriggerContext) -> carla.command.ApplyWalkerControl:
        step = self.step
        direction, speed = carla.Vector3D(), 0.0
        if step is not None and step.primitive in ("walk", "cross"):
            p = step.params
            heading = math.radians(ctx.route.point_at(self.spec.route_s).rotation.yaw)
            forward = (math.cos(heading), math.sin(heading))
            right = (-forward[1], forward[0])
            if step.primitive == "walk":
                sign = 1.0 if p.direction == "forward" else -1.0
                dx, dy = sign * forward[0], sign * forward[1]
            elif p.direction == "auto":
                dx, dy = self.spec.cross_direction
            else:
                sign = 1.0 if p.direction == "right" else -1.0
                dx, dy = sign * right[0], sign * right[1]
            direction, speed = carla.Vector3D(dx, dy, 0.0), float(p.speed)
        return carla.command.ApplyWalkerControl(self.actor.id, carla.WalkerControl(direction, speed))

    def _vehicle_control(self, w: World, transform: carla.Transform, speed: float) -> carla.command.ApplyVehicleControl:
        step = self.step
        x, y = transform.location.x, transform.location.y
        moving = step is not None and step.primitive in ("follow_lane", "change_lane", "run_red_light")
        if step is None or step.primitive in ("wait", "idle", "door", "lights"):
            control = carla.VehicleControl(throttle=0.0, brake=1.0, hand_brake=True)
            return carla.command.ApplyVehicleControl(self.actor.id, control)
        self.path.advance(x, y)
        path = self.path.as_array()
        steer = pure_pursuit(x, y, transform.rotation.yaw, speed, path, self.wheelbase)
        if not moving:
            strength = step.params.strength if step.primitive == "brake" else min(step.params.decel / 8.0, 1.0)
            control = carla.VehicleControl(steer=steer, brake=float(strength))
            return carla.command.ApplyVehicleControl(self.actor.id, control)
        p = step.params
        target = float(p.speed) if p.speed is not None else self.held_speed
        if not self.ignore_lights:
            target = min(target, self._light_limit(w, path))
        idm = IDM(min_gap=float(p.gap)) if getattr(p, "gap", None) is not None else NPC_IDM
        gap, closing = self._gap_ahead(w, transform, speed)
        accel = idm.accel(speed, target, gap, closing)
        throttle, brake = self.speed_control.control(speed, float(np.clip(speed + accel, 0.0, target)))
        control = carla.VehicleControl(throttle=throttle, steer=steer, brake=brake)
        return carla.command.ApplyVehicleControl(self.actor.id, control)

    def _gap_ahead(self, w: World, transform: carla.Transform, speed: float) -> tuple[float | None, float]:
        """Bumper gap (m) and closing speed to the nearest vehicle or walker ahead in this vehicle's corridor."""
        others = w.others[w.others[:, 0] != self.actor.id]
        if len(others) == 0:
            return None, 0.0
        yaw = math.radians(transform.rotation.yaw)
        fx, fy = math.cos(yaw), math.sin(yaw)
        dx, dy = others[:, 1] - transform.location.x, others[:, 2] - transform.location.y
        along, across = dx * fx + dy * fy, -dx * fy + dy * fx
        ahead = (along > 0) & (along < 50.0) & (np.abs(across) < GAP_CORRIDOR_M)
        if not ahead.any():
            return None, 0.0
        k = np.flatnonzero(ahead)[np.argmin(along[ahead])]
        their_speed = others[k, 3] * fx + others[k, 4] * fy
        return float(along[k] - 2.0 * self.half_length), float(speed - their_speed)

    def _light_limit(self, w: World, path: np.ndarray) -> float:
        """The highest speed that still stops before a red or yellow light on the path."""
        index, light = w.lights.first_on_path(path)
        if light is None or light.state == carla.TrafficLightState.Green:
            return math.inf
        distance = max(index * 1.0 - LIGHT_STOP_MARGIN_M, 0.0)
        return math.sqrt(2.0 * NPC_IDM.comfort_decel * distance)

