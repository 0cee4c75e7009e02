"""The scenario engine: a compiled scenario run on any CARLA-API world, plugged into DrivingEnv as its hook.

    run = ScenarioRun(load_scenario(path), seed=3)
    obs, info = env.reset(seed=3, options={"scenario": run})

DrivingEnv calls, in order: `map_name`, `weather()`, `plan_route(map)`, `ego_blueprint()`, `timeout_s`,
`setup(client, world, ego, route)` (before the first tick), `tick(world, ego, snapshot)` after every tick,
and `cleanup(client)`. Only the carla client API is used: actors are spawned and driven with batches, so the
same run works on the embedded server and on CARLA 0.9.16.
"""
from __future__ import annotations

from typing import Protocol

import carla
import numpy as np

from .behaviours import ActorRunner, ScenarioEvent, World
from .compile import CompiledScenario, ScenarioSpec, compile_scenario, draw, map_path, weather_of
from .lights import LightIndex, hold_group
from .route import Route
from .triggers import TriggerContext

SPAWN_LIFT_M = {"vehicle": 0.3, "walker": 1.0, "prop": 0.1}  # CARLA drops actors onto the ground from here


class ScenarioHook(Protocol):
    """What DrivingEnv asks of a scenario (see the module docstring for the call order)."""

    map_name: str
    timeout_s: float

    def weather(self) -> carla.WeatherParameters | None: ...
    def plan_route(self, world_map: carla.Map) -> Route: ...
    def ego_blueprint(self) -> str: ...
    def setup(self, client: carla.Client, world: carla.World, ego: carla.Vehicle, route: Route) -> None: ...
    def tick(self, world: carla.World, ego: carla.Vehicle, snapshot: carla.WorldSnapshot) -> None: ...
    def cleanup(self, client: carla.Client) -> None: ...


class ScenarioRun:
    """One scenario file drawn for one seed; implements ScenarioHook. `events` records what fired when."""

    def __init__(self, spec: ScenarioSpec, seed: int) -> None:
        self.spec, self.seed = spec, int(seed)
        self.drawn, self.parameters = draw(spec, self.seed)
        self.map_name = map_path(spec)
        self.weather_name = weather_of(self.drawn)[1]
        self.speed_limit_kmh = float(self.drawn.ego.speed_limit)
        self.compiled: CompiledScenario | None = None
        self.events: list[ScenarioEvent] = []
        self.runners: list[ActorRunner] = []
        self._client: carla.Client | None = None
        self._actor_ids: list[int] = []
        self._lights: LightIndex | None = None
        self._start_frame: int | None = None
        self._ego_s = 0.0
        self._event_keys: set[str] = set()
        self._mover_ids: list[int] = []  # the ego's and the scenario's vehicles and walkers

    @property
    def name(self) -> str:
        return self.drawn.name

    @property
    def timeout_s(self) -> float:
        if self.compiled is None:
            raise RuntimeError("timeout_s is known once plan_route() has compiled the scenario on the map")
        return self.compiled.timeout_s

    @property
    def trigger_frame(self) -> int | None:
        """The frame of the first step that a trigger released (a step started after a `wait`), if any."""
        for event in self.events:
            if event.what == "finished" and event.primitive == "wait":
                return event.frame
        return None

    # ------------------------------------------------------------------------------------- hook: before
    def weather(self) -> carla.WeatherParameters:
        return weather_of(self.drawn)[0]

    def plan_route(self, world_map: carla.Map) -> Route:
        self.compiled = compile_scenario(self.spec, self.seed, world_map)
        return self.compiled.route

    def ego_blueprint(self) -> str:
        return self.compiled.ego_blueprint

    def setup(self, client: carla.Client, world: carla.World, ego: carla.Vehicle, route: Route) -> None:
        """Spawn every actor in one batch, hold the ego's lights green if asked, and prepare the runners."""
        self._client, self.events, self.runners, self._event_keys = client, [], [], set()
        self._start_frame, self._ego_s = None, 0.0
        library = world.get_blueprint_library()
        commands = []
        for actor in self.compiled.actors:
            blueprint = library.find(actor.blueprint)
            if blueprint.has_attribute("role_name"):
                blueprint.set_attribute("role_name", "scenario")
            lifted = carla.Transform(actor.transform.location + carla.Location(z=SPAWN_LIFT_M[actor.kind]),
                                     actor.transform.rotation)
            commands.append(carla.command.SpawnActor(blueprint, lifted))
        responses = client.apply_batch_sync(commands, False)
        self._actor_ids = [r.actor_id for r in responses if not r.error]
        failed = [(a, r.error) for a, r in zip(self.compiled.actors, responses) if r.error]
        if failed:
            self.cleanup(client)
            actor, error = failed[0]
            loc = actor.transform.location
            raise RuntimeError(f"{self.compiled.file}: actor '{actor.id}' could not be spawned at "
                               f"({loc.x:.1f}, {loc.y:.1f}): {error}; move it (place.s / place.offset)")
        actors = world.get_actors(self._actor_ids)
        by_id = {a.id: a for a in actors}
        world_map = world.get_map()
        self.runners = []
        try:
            for spec, actor_id in zip(self.compiled.actors, list(self._actor_ids)):
                runner = ActorRunner(spec, by_id[actor_id], world_map)
                self.runners.append(runner)
                self._actor_ids += list(runner.owned.values())  # what it spawned itself (doors) goes with the rest
        except RuntimeError:  # a door that could not be spawned: leave nothing behind
            self.cleanup(client)
            raise
        self._lights = LightIndex(world)
        self._mover_ids = [a.id for a in world.get_actors() if a.type_id.startswith(("vehicle.", "walker."))]
        if self.compiled.ego_lights == "green":
            for light in self._lights.all_on_path(route.xy):
                hold_group(light, carla.TrafficLightState.Green)

    # -------------------------------------------------------------------------------------- hook: ticks
    def tick(self, world: carla.World, ego: carla.Vehicle, snapshot: carla.WorldSnapshot) -> None:
        # Scenario time counts ticks: differences of the world's absolute clock round differently
        # depending on how long the world ran before the episode, and triggers would fire a tick apart.
        if self._start_frame is None:
            self._start_frame = snapshot.frame
        elapsed = (snapshot.frame - self._start_frame) * snapshot.timestamp.delta_seconds
        ego_state = snapshot.find(ego.id)
        ego_location = ego_state.get_transform().location
        route = self.compiled.route
        self._ego_s = max(self._ego_s, route.project(ego_location, near_s=self._ego_s)[0])
        w = World(world.get_map(), snapshot, self._lights, self._movers(snapshot))
        commands = []
        for runner in self.runners:
            ctx = TriggerContext(route, ego_location, ego_state.get_velocity().length(), self._ego_s,
                                 elapsed, 0.0, self._event_keys,
                                 runner.last_location or runner.spec.transform.location, runner.spec.route_s)
            command = runner.tick(ctx, w, self.events)
            if command is not None:
                commands.append(command)
        if commands:
            self._client.apply_batch(commands)

    def _movers(self, snapshot: carla.WorldSnapshot) -> np.ndarray:
        """(N, 5) id, x, y, vx, vy of the vehicles and walkers present at setup."""
        rows = []
        for actor_id in self._mover_ids:
            state = snapshot.find(actor_id)
            if state is not None:
                location, velocity = state.get_transform().location, state.get_velocity()
                rows.append((actor_id, location.x, location.y, velocity.x, velocity.y))
        return np.array(rows).reshape(-1, 5)

    # ------------------------------------------------------------------------------------- hook: after
    def cleanup(self, client: carla.Client) -> None:
        """Destroy what setup spawned (one batch) and let the traffic lights run again."""
        if self._actor_ids:
            client.apply_batch_sync([carla.command.DestroyActor(i) for i in self._actor_ids], False)
        self._actor_ids, self.runners = [], []
        if self._lights is not None:
            client.get_world().freeze_all_traffic_lights(False)
            self._lights = None
