"""Procedural generator of the shipped maps: `python -m envs.maps.generate [--out DIR] [--seed N]`.

Each `make_*` function takes its parameters as arguments and returns OpenDRIVE text; the same arguments
always give byte-identical text. The shipped files in `envs/maps/xodr/` are these functions' defaults.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from envs.maps.builder import Arm, JunctionSpec, LaneSpec, RoadSpec, build_junction, write_xodr
from envs.maps.geometry import Cubic

XODR_DIR = Path(__file__).with_name("xodr")
LANE_WIDTH = 3.5


def _two_way(driving: int, width: float, speed: float, outer: list[tuple[str, float, str, float]]) -> list[LaneSpec]:
    """Lanes for both sides: `driving` lanes each way, then `outer` (type, width, mark, height) outwards.

    Marks sit on a lane's outer border: broken between driving lanes, solid at the driving edge.
    """
    lanes: list[LaneSpec] = []
    for sign in (1, -1):
        for k in range(1, driving + 1):
            mark = "broken" if k < driving else "solid"
            lanes.append(LaneSpec(sign * k, "driving", width, mark=mark, speed=speed))
        for n, (ltype, w, mark, height) in enumerate(outer, start=driving + 1):
            lanes.append(LaneSpec(sign * n, ltype, w, mark=mark, height=height))
    return lanes


def make_straight(length: float = 700.0, lanes_per_direction: int = 3, speed_kmh: float = 90.0) -> str:
    """A straight multi-lane highway: driving lanes both ways, shoulders, a double solid centre line."""
    road = RoadSpec(1, "straight", 0.0, 0.0, 0.0, [(length, 0.0, 0.0)],
                    _two_way(lanes_per_direction, LANE_WIDTH, speed_kmh / 3.6, [("shoulder", 2.0, "none", 0.0)]),
                    center_mark="solid solid", center_color="yellow", speed_kmh=speed_kmh)
    return write_xodr("straight", [road], [])


def make_curves(radius_left: float = 60.0, radius_right: float = 80.0, spiral: float = 40.0,
                climb: float = 0.0, speed_kmh: float = 60.0) -> str:
    """A winding two-lane-each-way road: lines, clothoid transitions, arcs both ways, optionally a smooth climb.

    The shipped map is flat (climb 0) because the embedded server places actors on z = 0.
    """
    kl, kr = 1.0 / radius_left, -1.0 / radius_right
    pieces = [(100.0, 0.0, 0.0), (spiral, 0.0, kl), (80.0, kl, kl), (spiral, kl, 0.0), (80.0, 0.0, 0.0),
              (spiral, 0.0, kr), (100.0, kr, kr), (spiral, kr, 0.0), (100.0, 0.0, 0.0)]
    length = sum(p[0] for p in pieces)
    # z = climb * (3u^2 - 2u^3), u = s / length: level at both ends, steepest in the middle.
    elevation = [Cubic(0.0, 0.0, 0.0, 3.0 * climb / length**2, -2.0 * climb / length**3)] if climb else []
    road = RoadSpec(1, "curves", 0.0, 0.0, 0.0, pieces,
                    _two_way(2, LANE_WIDTH, speed_kmh / 3.6, [("shoulder", 1.5, "none", 0.0)]),
                    center_mark="solid solid", center_color="yellow", speed_kmh=speed_kmh,
                    elevation=elevation, section_starts=[length / 2])
    return write_xodr("curves", [road], [])


def make_junction(arm_length: float = 150.0, lanes_per_direction: int = 2, speed_kmh: float = 50.0) -> str:
    """A signalised four-way crossing of two-lane-each-way roads with sidewalks, centred at the origin."""
    outer = [("sidewalk", 2.5, "none", 0.15)]
    half = lanes_per_direction * LANE_WIDTH + sum(o[1] for o in outer)
    edge = math.ceil(half + 4.0)
    def road(rid: int, name: str, x: float, y: float, hdg: float) -> RoadSpec:
        return RoadSpec(rid, name, x, y, hdg, [(arm_length, 0.0, 0.0)],
                        _two_way(lanes_per_direction, LANE_WIDTH, speed_kmh / 3.6, outer),
                        center_mark="solid solid", center_color="yellow", speed_kmh=speed_kmh)
    west = road(1, "west", -edge - arm_length, 0.0, 0.0)
    east = road(2, "east", edge, 0.0, 0.0)
    south = road(3, "south", 0.0, -edge - arm_length, math.pi / 2)
    north = road(4, "north", 0.0, edge, math.pi / 2)
    arms = [Arm(west, "end"), Arm(south, "end"), Arm(east, "start"), Arm(north, "start")]
    junction, connecting = build_junction(10, arms, 100, signalised=True, name="crossing")
    return write_xodr("junction", [west, east, south, north, *connecting], [junction])


def make_town(seed: int = 0, blocks: tuple[int, int] = (3, 3), block: float = 90.0, speed_kmh: float = 40.0,
              signalised_fraction: float = 0.6, parking_fraction: float = 0.75) -> str:
    """A grid of two-way streets (one lane each way, parking, sidewalks) meeting at junctions.

    The seed picks which four-way and three-way junctions get traffic lights (at least one of each kind
    stays unsignalised when there are several) and which streets have parking lanes instead of shoulders.
    """
    rng = random.Random(seed)
    nx, ny = blocks[0] + 1, blocks[1] + 1
    half = LANE_WIDTH + 2.5 + 2.0
    edge = half + 2.0
    streets: dict[tuple[int, int, str], RoadSpec] = {}
    rid = 1
    for j in range(ny):
        for i in range(nx):
            for axis, (di, dj) in (("h", (1, 0)), ("v", (0, 1))):
                if i + di >= nx or j + dj >= ny:
                    continue
                parking = rng.random() < parking_fraction
                side = ("parking", 2.5, "none", 0.0) if parking else ("shoulder", 2.5, "none", 0.0)
                lanes = _two_way(1, LANE_WIDTH, speed_kmh / 3.6, [side, ("sidewalk", 2.0, "none", 0.15)])
                hdg = 0.0 if axis == "h" else math.pi / 2
                x = i * block + edge * di
                y = j * block + edge * dj
                streets[(i, j, axis)] = RoadSpec(rid, f"street_{axis}{i}{j}", x, y, hdg,
                                                 [(block - 2 * edge, 0.0, 0.0)], lanes,
                                                 center_mark="broken", center_color="yellow", speed_kmh=speed_kmh)
                rid += 1
    nodes = [(i, j) for j in range(ny) for i in range(nx)]
    def arms_of(i: int, j: int) -> list[Arm]:
        arms = []
        for key, contact in (((i - 1, j, "h"), "end"), ((i, j - 1, "v"), "end"),
                             ((i, j, "h"), "start"), ((i, j, "v"), "start")):
            if key in streets:
                arms.append(Arm(streets[key], contact))
        return arms
    by_arity: dict[int, list[tuple[int, int]]] = {}
    for node in nodes:
        by_arity.setdefault(len(arms_of(*node)), []).append(node)
    signalised: set[tuple[int, int]] = set()
    for arity in (4, 3):
        group = by_arity.get(arity, [])
        count = min(max(1, round(signalised_fraction * len(group))), max(len(group) - 1, 1)) if group else 0
        signalised.update(rng.sample(group, count))
    junctions: list[JunctionSpec] = []
    connecting: list[RoadSpec] = []
    next_id = 1000
    for n, (i, j) in enumerate(nodes, start=101):
        spec, roads = build_junction(n, arms_of(i, j), next_id, signalised=(i, j) in signalised,
                                     name=f"junction_{i}{j}")
        junctions.append(spec)
        connecting.extend(roads)
        next_id += len(roads)
    return write_xodr("town", [*streets.values(), *connecting], junctions)


def generate_all(seed: int = 0) -> dict[str, str]:
    return {
        "straight": make_straight(),
        "curves": make_curves(),
        "junction": make_junction(),
        "town": make_town(seed=seed),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the shipped OpenDRIVE maps.")
    parser.add_argument("--out", type=Path, default=XODR_DIR, help="output folder (default: the shipped maps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the town layout (default 0: shipped)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generate_all(args.seed).items():
        path = args.out / f"{name}.xodr"
        path.write_text(text, encoding="utf-8")
        print(f"{path}: {len(text) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
