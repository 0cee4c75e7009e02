"""`slimdrive scenario generate seed=0 out=...`: compose scenario files from templates on every shipped map, and
a suite that runs them.

Each template stages one hazard with the scenario language as it is (`docs/scenarios.md`); where it goes is found
on the map, not written by hand: candidate routes start at the map's spawn points (`RoadNetwork.spawn_points`),
and a template takes a route only where its feature is there, probed with the placement code that compiles the
files (`place_on_route`): a parking lane or sidewalk on the wanted side, a neighbouring lane of the same
direction, a junction ahead (signalised for a red-light runner) and its other approaches. Templates:

  blocker        a vehicle of any class (bicycle to bus and truck) parked, stalled or crashed in the ego's lane,
                 on one-lane and multi-lane roads, before a junction where the route has one
  crossing       a walker stepping out from behind a parked vehicle or a prop, from either side of the road
  cut_in         a vehicle in the next lane of the ego's direction (either side) cutting in close and slowing
  lead_brake     the vehicle ahead braking hard
  side_road      a vehicle (a cyclist, a motorbike, a car, a truck) entering the junction ahead from another
                 approach across or into the ego's path
  red_light      a vehicle running its red light across a signalised junction the ego crosses on green

Weather draws from night, rain and fog presets (and day), so every file meets adverse conditions over its seeds.
Everything is drawn from `seed` in a fixed order, each file is validated as `slimdrive scenario validate` does
(compiled on its map for the suite's seeds), and files are written with sorted choices: the same seed gives the
same bytes. The shipped `stress` suite (`scenarios/suites/stress.yaml`, files in `scenarios/suites/stress/`) is
`slimdrive scenario generate out=scenarios/suites` with conf/scenario/generate.yaml's other defaults (`out`
defaults to runs/generated, so that trying another seed never overwrites the shipped suite).
"""
from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import carla
import numpy as np
import yaml
from omegaconf import DictConfig, ListConfig

from envs.maps import available_maps, load_network
from envs.server.blueprints import BY_ID

from .compile import compile_seeds, load_scenario, offline_map
from .errors import ScenarioError
from .placement import PlacementError, place_on_route
from .route import Route, RouteError, plan_route, route_from_length
from .schema import RoutePlacement
from .suites import load_suite

ROUTE_M = 160.0  # long enough for a hazard at 50-90 m and the ego's recovery after it
NIGHT_RAIN_FOG = ["ClearNoon", "ClearNight", "HardRainNoon", "HardRainNight", "MidRainyNoon", "FoggyDay",
                  "FoggyNight", "WetCloudySunset"]
# Vehicle classes by size, from the blueprint table (envs/server/blueprints.py).
BICYCLES = ["vehicle.bh.crossbike", "vehicle.gazelle.omafiets"]
MOTORBIKES = ["vehicle.yamaha.yzf", "vehicle.kawasaki.ninja"]
CARS = ["vehicle.audi.a2", "vehicle.toyota.prius", "vehicle.lincoln.mkz_2020", "vehicle.mercedes.coupe_2020",
        "vehicle.dodge.charger_police_2020", "vehicle.tesla.model3"]
VANS = ["vehicle.mercedes.sprinter", "vehicle.volkswagen.t2_2021", "vehicle.ford.ambulance",
        "vehicle.nissan.patrol_2021"]
TRUCKS = ["vehicle.carlamotors.carlacola", "vehicle.carlamotors.european_hgv", "vehicle.carlamotors.firetruck"]
BUSES = ["vehicle.mitsubishi.fusorosa"]
BLOCKER_CLASSES = {"bicycle": BICYCLES, "motorbike": MOTORBIKES, "car": CARS, "van": VANS, "truck": TRUCKS,
                   "bus": BUSES}
OCCLUDERS = {"van": VANS, "truck": TRUCKS, "bus": BUSES, "prop": ["static.prop.container", "static.prop.busstop"]}
WALKERS = [f"walker.pedestrian.{i:04d}" for i in (1, 2, 5, 6, 7, 8)]


class GenerateError(ValueError):
    """A generation that cannot produce what was asked; the message says which setting and what to do."""


@dataclass
class Site:
    """A candidate route on a map: its start and goal as the file writes them, and the route they compile to."""

    map_name: str
    world_map: carla.Map
    start: carla.Location
    goal: carla.Location
    route: Route

    def fits(self, **placement: Any) -> bool:
        """Whether a route placement (`s`, `lane`, `side`, ...) lands on this map, as compiling the file would."""
        try:
            place_on_route(self.world_map, self.route, RoutePlacement(**placement), "vehicle")
        except PlacementError:
            return False
        return True

    def junction_at(self, s: float) -> bool:
        wp = self.world_map.get_waypoint(self.route.point_at(s).location, project_to_road=True,
                                         lane_type=carla.LaneType.Driving)
        return wp is not None and wp.is_junction

    def first_junction(self, after: float = 30.0) -> tuple[float, carla.Junction] | None:
        """(route metre where the route enters its first junction after `after`, that junction), if any."""
        for s in np.arange(after, self.route.length - 20.0, 1.0):
            wp = self.world_map.get_waypoint(self.route.point_at(float(s)).location, project_to_road=True,
                                             lane_type=carla.LaneType.Driving)
            if wp is not None and wp.is_junction:
                return float(s), wp.get_junction()
        return None

    def clear_stretch(self, s0: float, s1: float) -> bool:
        """No junction on the route between s0 and s1 (hazards on a lane, not inside a crossing)."""
        return not any(self.junction_at(float(s)) for s in np.arange(s0, s1, 2.0))

    def route_data(self) -> dict:
        return {"start": _xy(self.start), "goal": _xy(self.goal)}


def _xy(location: carla.Location) -> dict:
    return {"x": round(float(location.x), 2), "y": round(float(location.y), 2)}


def _sites(map_name: str, rng: np.random.Generator, count: int) -> list[Site]:
    """Up to `count` routes of about ROUTE_M from shuffled spawn points, each as start + goal (planned back by
    the same planner the files use, so the route probed is the route that runs)."""
    world_map = offline_map(map_name)
    points = load_network(map_name).spawn_points()
    sites = []
    for index in rng.permutation(len(points)):
        pose = points[int(index)]
        start = carla.Location(x=pose.x, y=pose.y, z=0.0)
        try:
            first = route_from_length(world_map, start, ROUTE_M, seed=int(rng.integers(2**31)))
            goal = first.transforms[-1].location
            route = plan_route(world_map, start, goal)
        except RouteError:
            continue
        if route.length >= ROUTE_M - 10.0:
            sites.append(Site(map_name, world_map, start, carla.Location(x=goal.x, y=goal.y, z=0.0), route))
        if len(sites) >= count:
            break
    return sites


def _u(rng: np.random.Generator, low: float, high: float, width: float) -> dict:
    """A uniform range of `width` inside [low, high], its place drawn (so files differ in their ranges too)."""
    lo = float(rng.uniform(low, high - width))
    return {"uniform": [round(lo, 1), round(lo + width, 1)]}


def _pick(rng: np.random.Generator, options: list) -> Any:
    return options[int(rng.integers(len(options)))]


def _weather(rng: np.random.Generator) -> dict:
    picked = sorted(rng.choice(NIGHT_RAIN_FOG, size=3, replace=False).tolist())
    return {"choice": picked}


def _base(name: str, description: str, site: Site, rng: np.random.Generator, speed_limit: float) -> dict:
    return {"name": name, "description": description, "map": site.map_name, "weather": _weather(rng),
            "parameters": {}, "ego": {"route": site.route_data(), "speed_limit": speed_limit}, "actors": []}


# ------------------------------------------------------------------------------------------- templates
# Each takes (site, rng, variant index) and returns a scenario's data, or None when the site lacks its feature.
def blocker(site: Site, rng: np.random.Generator, k: int) -> dict | None:
    kind = ["parked", "stalled", "crashed"][k % 3]
    cls = list(BLOCKER_CLASSES)[int(rng.integers(len(BLOCKER_CLASSES)))]
    s = float(rng.uniform(55, 85))
    junction = site.first_junction(after=40.0)
    if junction is not None and k % 2:  # close before the junction, where the pass must end early
        s = junction[0] - float(rng.uniform(12, 18))
    if s < 40 or not site.clear_stretch(s - 25, s + 15):
        return None
    lanes = "multi-lane" if site.fits(s=s, lane="left") else "one-lane"
    data = _base(f"blocker_{kind}_{cls}", f"A {kind} {cls} blocks the ego's lane on a {lanes} road"
                 f"{' just before a junction' if junction is not None and k % 2 else ''}; the ego passes it when "
                 "the next lane is clear.", site, rng, 30 if lanes == "one-lane" else 40)
    data["parameters"] = {"block_s": {"uniform": [round(s - 3, 1), round(s + 3, 1)]}}
    # crashed: skewed, but never so far that its footprint (half-span L sin(yaw) + W cos(yaw)) leaves the next lane
    # too narrow to pass in: a 20 deg bus spans 6.6 m and closes two lanes
    limit = min(_max_skew_deg(BY_ID[b].body.extent) for b in BLOCKER_CLASSES[cls])
    low_share = float(rng.uniform(0.4, 0.7))  # one draw whatever the kind, so other files keep their draws
    yaw = {"parked": {"uniform": [-3, 3]}, "stalled": {"uniform": [-6, 6]},
           "crashed": {"uniform": [round(low_share * limit, 1), round(limit, 1)]}}[kind]
    offset = {"parked": 0.4, "stalled": 0.0, "crashed": -0.2}[kind]
    data["actors"].append({"id": "blocker", "blueprint": {"choice": BLOCKER_CLASSES[cls]},
                           "place": {"s": "$block_s", "offset": offset, "yaw": yaw}})
    if kind in ("stalled", "crashed"):  # a warning cone some metres before, as a driver would set one
        data["actors"].append({"id": "cone", "blueprint": "static.prop.trafficcone01",
                               "place": {"s": round(s - 14, 1), "offset": 0.5}})
    return data


CRASH_HALF_SPAN_M = 2.3  # a crashed vehicle's lateral half-span at most: 1.2 m of a 3.5 m lane beside it stays free


def _max_skew_deg(extent: tuple[float, float, float]) -> float:
    """The largest yaw at which a body of half-extents (L, W) spans no more than CRASH_HALF_SPAN_M either side."""
    length, width = extent[0], extent[1]
    for yaw in np.arange(30.0, 0.0, -0.5):
        if length * math.sin(math.radians(yaw)) + width * math.cos(math.radians(yaw)) <= CRASH_HALF_SPAN_M:
            return float(yaw)
    return 0.0


def crossing(site: Site, rng: np.random.Generator, k: int) -> dict | None:
    side = ["right", "left"][k % 2]
    s = float(rng.uniform(55, 80))
    if not site.clear_stretch(s - 20, s + 10):
        return None
    edge = "sidewalk" if site.fits(s=s, lane="sidewalk", side=side) else "shoulder"
    occluder = list(OCCLUDERS)[int(rng.integers(len(OCCLUDERS)))]
    if not site.fits(s=s, lane=edge, side=side) or not site.fits(s=s - 10, lane="parked", side=side):
        return None
    data = _base(f"crossing_{side}_{occluder}", f"A pedestrian steps out from behind a {occluder} on the {side} "
                 "of the road and crosses in front of the ego.", site, rng, 30)
    far = side == "left"  # from the far side the walker crosses the opposite lanes first: released earlier
    data["parameters"] = {"release_tta": _u(rng, 2.6, 4.2, 0.5) if not far else _u(rng, 3.6, 5.4, 0.6),
                          "walk_speed": _u(rng, 1.2, 2.2, 0.4), "cross_s": {"uniform": [round(s - 2, 1),
                                                                                        round(s + 2, 1)]}}
    # the occluder's far end stands 1.5 m short of the walker's nearest start, whatever body the choice draws
    behind = 2.0 + 1.5 + max(BY_ID[b].body.extent[0] for b in OCCLUDERS[occluder])
    occluder_place = {"s": round(s - behind, 1), "lane": "parked", "side": side}
    if occluder == "prop":
        occluder_place = {"s": round(s - behind, 1), "lane": edge, "side": side}
    data["actors"] += [
        {"id": "occluder", "blueprint": {"choice": OCCLUDERS[occluder]}, "place": occluder_place},
        {"id": "walker", "blueprint": {"choice": sorted(rng.choice(WALKERS, 3, replace=False).tolist())},
         "place": {"s": "$cross_s", "lane": edge, "side": side, "yaw": 90},
         "behaviour": [{"wait": {"ego_time_to_arrival": "$release_tta"}},
                       {"name": "crossing", "cross": {"speed": "$walk_speed"}}]}]
    return data


def cut_in(site: Site, rng: np.random.Generator, k: int) -> dict | None:
    side = ["left", "right"][k % 2]
    s = float(rng.uniform(35, 45))
    # the cutter drives on until the ego closes in: its lane must go on, junction-free, for 100 m
    if not site.clear_stretch(10, s + 100) or not all(site.fits(s=x, lane=side) for x in (s, s + 40, s + 80, s + 100)):
        return None
    data = _base(f"cut_in_from_{side}", f"A vehicle in the lane to the ego's {side} cuts in close ahead of it and "
                 "slows down.", site, rng, 50)
    data["parameters"] = {"cut_gap": _u(rng, 11, 17, 2), "slow_speed": _u(rng, 3, 7, 1.5)}
    data["actors"].append({
        "id": "cutter", "blueprint": {"choice": sorted(rng.choice(CARS + VANS, 3, replace=False).tolist())},
        "place": {"s": round(s, 1), "lane": side},
        "behaviour": [{"follow_lane": {"speed": 7}, "until": {"ego_distance": "$cut_gap"}},
                      {"name": "cut_in", "change_lane": {"direction": "right" if side == "left" else "left",
                                                         "distance": 12, "speed": 7}},
                      {"follow_lane": {"speed": "$slow_speed"}}]})
    return data


def lead_brake(site: Site, rng: np.random.Generator, k: int) -> dict | None:
    if not site.clear_stretch(5, 100):
        return None
    data = _base("lead_brake", "The vehicle ahead brakes hard, waits, and drives on.", site, rng, 40)
    data["parameters"] = {"brake_time": _u(rng, 6, 11, 2), "lead_speed": _u(rng, 7, 10, 1.5)}
    data["actors"].append({
        "id": "lead", "blueprint": {"choice": sorted(rng.choice(CARS + VANS + TRUCKS, 3, replace=False).tolist())},
        "place": {"s": round(float(rng.uniform(22, 32)), 1)},
        "behaviour": [{"follow_lane": {"speed": "$lead_speed"}, "until": {"time": "$brake_time"}},
                      {"name": "slam", "brake": {"strength": 1.0}}, {"wait": {"after": 4}},
                      {"follow_lane": {"speed": "$lead_speed"}}]})
    return data


def _approaches(site: Site, s_junction: float, junction: carla.Junction) -> list[carla.Waypoint]:
    """The lanes entering `junction` other than the ego's own approach, each 25 m before the junction."""
    ego_road = site.world_map.get_waypoint(site.route.point_at(s_junction - 3).location).road_id
    entries, seen = [], set()
    for entry, _ in junction.get_waypoints(carla.LaneType.Driving):
        before = entry.previous(25.0)
        if not before or before[0].road_id == ego_road or (before[0].road_id, before[0].lane_id) in seen \
                or before[0].transform.location.distance(entry.transform.location) > 27.0:  # a lane that ends sooner
            continue
        seen.add((before[0].road_id, before[0].lane_id))
        entries.append(before[0])
    return sorted(entries, key=lambda w: (w.road_id, w.lane_id))


def side_road(site: Site, rng: np.random.Generator, k: int) -> dict | None:
    found = site.first_junction(after=60.0)
    if found is None or found[0] > 110:
        return None
    s_j, junction = found
    approaches = _approaches(site, s_j, junction)
    if not approaches:
        return None
    wp = approaches[k % len(approaches)]
    cls = ["bicycle", "motorbike", "car", "truck"][int(rng.integers(4))]
    t = wp.transform
    data = _base(f"side_road_{cls}", f"A {cls} enters the junction ahead from another approach as the ego "
                 "arrives; the ego yields.", site, rng, 30)
    data["ego_lights"] = "green"
    speed = {"bicycle": 5.0, "motorbike": 8.0, "car": 8.0, "truck": 6.0}[cls]
    # released so that it reaches the junction about as the ego does (25 m at its speed), give or take a second
    arrive = 25.0 / speed
    data["parameters"] = {"release_tta": {"uniform": [round(arrive + 0.3, 1), round(arrive + 1.3, 1)]}}
    data["actors"].append({
        "id": "entering", "blueprint": {"choice": BLOCKER_CLASSES[cls][:3]},
        "place": {"x": round(t.location.x, 2), "y": round(t.location.y, 2), "yaw": round(t.rotation.yaw, 1)},
        "behaviour": [{"wait": {"ego_time_to_arrival": "$release_tta", "at_s": round(s_j, 1)}},
                      {"name": "enter", "follow_lane": {"speed": speed, "turn": _pick(rng, ["straight", "left",
                                                                                                "right"]),
                                                        "obey_lights": False}}]})
    return data


def red_light(site: Site, rng: np.random.Generator, k: int) -> dict | None:
    found = site.first_junction(after=60.0)
    if found is None or found[0] > 110:
        return None
    s_j, junction = found
    network = load_network(site.map_name)
    info = next((j for j in network.junctions() if j.id == junction.id), None)
    approaches = _approaches(site, s_j, junction)
    if info is None or not info.signalised or not approaches:
        return None
    wp = approaches[k % len(approaches)]
    t = wp.transform
    data = _base("red_light_runner", "A vehicle from another approach runs its red light across the junction the "
                 "ego crosses on green.", site, rng, 40)
    data["ego_lights"] = "green"
    data["parameters"] = {"release_tta": _u(rng, 3.4, 4.6, 0.5), "runner_speed": _u(rng, 9, 12, 1.5)}
    data["actors"].append({
        "id": "runner", "blueprint": {"choice": sorted(rng.choice(CARS + VANS, 3, replace=False).tolist())},
        "place": {"x": round(t.location.x, 2), "y": round(t.location.y, 2), "yaw": round(t.rotation.yaw, 1)},
        "behaviour": [{"wait": {"ego_time_to_arrival": "$release_tta", "at_s": round(s_j, 1)}},
                      {"name": "run", "run_red_light": {"speed": "$runner_speed"}}]})
    return data


TEMPLATES: dict[str, Callable[[Site, np.random.Generator, int], dict | None]] = {
    "blocker": blocker, "crossing": crossing, "cut_in": cut_in, "lead_brake": lead_brake,
    "side_road": side_road, "red_light": red_light,
}


# ---------------------------------------------------------------------------------------------- driver
def _corners(transform: carla.Transform, blueprint: str, margin: float) -> np.ndarray:
    ex, ey = (e + margin for e in BY_ID[blueprint].body.extent[:2])
    yaw = np.radians(transform.rotation.yaw)
    axes = np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]])
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]])
    return np.array([transform.location.x, transform.location.y]) + (signs * [ex, ey]) @ axes


def _boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating axis test of two rectangles given by their corners."""
    for box in (a, b):
        for edge in (box[1] - box[0], box[3] - box[0]):
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def _overlapping(compiled) -> bool:
    """Whether two bodies of a compiled seed (the actors and the ego at its start) overlap with 0.3 m to spare:
    the simulator would refuse to spawn the second (placement checks the map, not the other actors)."""
    bodies = [_corners(compiled.route.start, compiled.ego_blueprint, 0.3)] + \
        [_corners(a.transform, a.blueprint, 0.3) for a in compiled.actors]
    return any(_boxes_overlap(bodies[i], bodies[j]) for i in range(len(bodies)) for j in range(i + 1, len(bodies)))


def _dump(data: dict) -> str:
    if not data["parameters"]:
        del data["parameters"]
    return "# generated by `slimdrive scenario generate` (scenarios/generate.py); regenerate rather than edit\n" + \
        yaml.safe_dump(data, sort_keys=False, width=110, default_flow_style=None)


def _check_settings(per_template: int, seeds_per_file: int, maps: list[str], templates: list[str]) -> None:
    """Refuse settings that would write an empty or unloadable suite before anything is touched: per_template=-1
    once wrote no file, exited 0 and still replaced the output folder; seeds_per_file=0 wrote a suite that
    load_suite refuses."""
    for key, value in (("per_template", per_template), ("seeds_per_file", seeds_per_file)):
        if value < 1:
            raise GenerateError(f"{key}={value}: must be an integer >= 1 (conf/scenario/generate.yaml)")
    for key, names in (("maps", maps), ("templates", templates)):
        if not names:
            raise GenerateError(f"{key}=[]: name at least one (conf/scenario/generate.yaml; maps=null is every map)")
    unknown = [t for t in templates if t not in TEMPLATES] + [m for m in maps if m not in available_maps()]
    if unknown:
        raise GenerateError(f"unknown template or map {unknown}: templates are {', '.join(TEMPLATES)}, maps "
                            f"{', '.join(available_maps())} (conf/scenario/generate.yaml)")


def generate(out: Path, seed: int, per_template: int, seeds_per_file: int, first_episode_seed: int,
             maps: list[str], templates: list[str], suite_name: str) -> tuple[Path, list[Path], int]:
    """Write the files and their suite into `out` (its `<suite_name>/` folder replaced); returns (suite file,
    scenario files, episodes). The suite is written and loaded in a staging folder first, and only a suite that
    loads replaces what `out` held: a refused run leaves the previous suite as it was."""
    _check_settings(per_template, seeds_per_file, maps, templates)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{suite_name}.staging"  # beside the target, so the final moves stay on one filesystem
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    try:
        suite, files, episodes = _write(staging, seed, per_template, seeds_per_file, first_episode_seed, maps,
                                        templates, suite_name)
        if not files:
            raise GenerateError(f"no template found a site on the maps {', '.join(maps)}: nothing written, "
                                f"{out / suite_name} left as it was (try more maps or templates)")
        try:
            load_suite(str(suite))  # the suite as `slimdrive eval suite=` would read it, every file compiled
        except ScenarioError as exc:
            raise GenerateError(f"the generated suite does not load, {out / suite_name} left as it was: {exc}") \
                from exc
        folder = out / suite_name
        if folder.exists():
            shutil.rmtree(folder)
        (staging / suite_name).rename(folder)
        suite = suite.replace(out / suite.name)
        return suite, [folder / f.name for f in files], episodes
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _write(out: Path, seed: int, per_template: int, seeds_per_file: int, first_episode_seed: int,
           maps: list[str], templates: list[str], suite_name: str) -> tuple[Path, list[Path], int]:
    folder = out / suite_name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    files, entries, episode_seed = [], [], first_episode_seed
    for map_name in maps:
        sites = _sites(map_name, rng, 60)
        for template in templates:
            made, used = 0, set()
            for _ in range(per_template * 8 + 24):  # many sites lack the feature: try more than needed
                if made >= per_template:
                    break
                index = int(rng.integers(len(sites)))
                if index in used:
                    continue
                data = TEMPLATES[template](sites[index], rng, made)
                if data is None:
                    continue
                data["name"] = f"{map_name}_{data['name']}_{made}"
                file = folder / f"{data['name']}.yaml"
                file.write_text(_dump(data))
                seeds = list(range(episode_seed, episode_seed + seeds_per_file))
                try:
                    if any(_overlapping(c) for c in compile_seeds(load_scenario(file), seeds)):
                        raise ScenarioError(file, None, "actors", "two bodies overlap", "placed elsewhere")
                except ScenarioError:
                    file.unlink()  # this site cannot stage it (a placement off the road for some draw)
                    continue
                used.add(index)
                episode_seed += seeds_per_file
                files.append(file)
                entries.append((file.name, seeds))
                made += 1
    lines = [f"name: {suite_name}", "description: >", f"  Generated by `slimdrive scenario generate seed={seed}`: "
             f"{len(files)} files from the templates {', '.join(templates)} on the maps {', '.join(maps)}, "
             f"{seeds_per_file} seeds each.", "entries:"]
    for name, seeds in entries:
        lines += [f"  - scenario: {suite_name}/{name}", f"    seeds: [{', '.join(map(str, seeds))}]"]
    suite = out / f"{suite_name}.yaml"
    suite.write_text("\n".join(lines) + "\n")
    return suite, files, sum(len(s) for _, s in entries)


def _names(value, key: str) -> list[str]:
    """A list of names from the config: `maps=straight` arrives as one string, which list() would split into
    letters, so a single string is one name; anything else but a list is refused."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, ListConfig | list | tuple):
        raise GenerateError(f"{key}={value!r}: give a list of names, e.g. {key}=[a,b] (conf/scenario/generate.yaml)")
    return [str(v) for v in value]


def run(cfg: DictConfig) -> int:
    try:
        for key in ("seed", "per_template", "seeds_per_file", "first_episode_seed"):
            if isinstance(cfg[key], bool) or not isinstance(cfg[key], int):
                raise GenerateError(f"{key}={cfg[key]!r}: must be an integer (conf/scenario/generate.yaml)")
        suite, files, episodes = generate(Path(cfg.out), int(cfg.seed), int(cfg.per_template),
                                          int(cfg.seeds_per_file), int(cfg.first_episode_seed),
                                          available_maps() if cfg.maps is None else _names(cfg.maps, "maps"),
                                          _names(cfg.templates, "templates"), str(cfg.name))
    except GenerateError as exc:
        print(f"slimdrive scenario generate: {exc}")
        return 2
    counts: dict[str, int] = {}
    for file in files:
        key = file.stem.split("_")[0]
        counts[key] = counts.get(key, 0) + 1
    print(f"{len(files)} scenario files ({', '.join(f'{m}: {n}' for m, n in counts.items())}), {episodes} episodes")
    print(f"wrote {suite} and {suite.parent / str(cfg.name)}/ (run it: slimdrive eval agent=expert suite={suite})")
    return 0
