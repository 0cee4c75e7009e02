"""Junction wiring and traffic lights as the stock client sees them."""

from __future__ import annotations

import carla
import pytest

from envs.maps import load_network, load_xodr_text


def _successors(topology: list[tuple[carla.Waypoint, carla.Waypoint]]) -> dict[int, set[int]]:
    """Topology segments chained where one ends at the location another starts."""
    graph: dict[int, set[int]] = {i: set() for i in range(len(topology))}
    for i, (_, end) in enumerate(topology):
        for j, (start, _) in enumerate(topology):
            if i != j and end.transform.location.distance(start.transform.location) < 0.1:
                graph[i].add(j)
    return graph


def _reach(graph: dict[int, set[int]], src: int) -> set[int]:
    seen, stack = {src}, [src]
    while stack:
        for v in graph[stack.pop()] - seen:
            seen.add(v)
            stack.append(v)
    return seen


def test_town_is_strongly_connected() -> None:
    cmap = carla.Map("town", load_xodr_text("town"))
    topology = cmap.get_topology()
    graph = _successors(topology)
    assert len(topology) > 100
    for i in graph:
        assert len(_reach(graph, i)) == len(topology), f"segment {i} cannot reach every lane"
    driving = {(w.road_id, w.lane_id) for w in cmap.generate_waypoints(5.0)}
    assert driving == {(a.road_id, a.lane_id) for a, _ in topology} | {(b.road_id, b.lane_id) for _, b in topology}


def test_junction_every_entry_reaches_every_exit() -> None:
    cmap = carla.Map("junction", load_xodr_text("junction"))
    net = load_network("junction")
    arms = [r.id for r in net.odr.roads.values() if r.junction == -1]
    for rid in arms:
        road = net.odr.roads[rid]
        # Lanes driving into the junction: right lanes if it meets the road's end, left lanes otherwise.
        sign = -1 if road.successor is not None else 1
        for lane in road.sections[0].side(sign):
            if lane.type != "driving":
                continue
            w = cmap.get_waypoint_xodr(rid, lane.id, road.length / 2)
            exits = {x.road_id for x in w.next(road.length / 2 + 40.0)}
            assert exits, f"road {rid} lane {lane.id} leads nowhere"
            if abs(lane.id) == 1:
                # The inner lane turns left and goes straight, the outer turns right and goes straight.
                assert len(exits) >= 2, f"road {rid} lane {lane.id} reaches only {exits}"
    reached = set()
    for rid in arms:
        for w in cmap.get_waypoint_xodr(rid, -1 if net.odr.roads[rid].successor else 1, 75.0).next(150.0):
            reached.add(w.road_id)
    assert reached == set(arms)


@pytest.mark.parametrize("name", ["junction", "town"])
def test_traffic_lights_match_landmarks(name: str) -> None:
    cmap = carla.Map(name, load_xodr_text(name))
    net = load_network(name)
    landmarks = {lm.id: lm for lm in cmap.get_all_landmarks_of_type("1000001")}
    lights = net.traffic_lights()
    assert lights and {tl.id for tl in lights} == set(landmarks)
    assert {lm.id for lm in cmap.get_all_landmarks()} >= set(landmarks)
    signalised = {j.id for j in net.junctions() if j.signalised}
    for tl in lights:
        lm = landmarks[tl.id]
        assert len(tl.id) <= 32 and lm.is_dynamic and lm.road_id == tl.road_id
        # CARLA nudges landmarks 0.25 m along the road; the signal's own (s, t) is what we report.
        loc = lm.transform.location
        assert abs(tl.pose.x - loc.x) < 0.3 and abs(tl.pose.y - loc.y) < 0.3
        assert tl.junction_id in signalised
        for lane_id in tl.lane_ids:
            # Driving towards the light on a controlled lane, the client must see it ahead.
            w = cmap.get_waypoint_xodr(tl.road_id, lane_id, tl.s - 20.0 if lane_id < 0 else tl.s + 20.0)
            assert w.lane_type == carla.LaneType.Driving
            assert tl.id in {ahead.id for ahead in w.get_landmarks_of_type(30.0, "1000001", False)}
        # The trigger volume lies on the controlled lanes, just before the stop line.
        hit = net.locate(tl.trigger.center[0], tl.trigger.center[1])
        assert hit is not None and hit.road_id == tl.road_id and hit.lane_id in tl.lane_ids
        stop = net.locate(tl.stop_line.x, tl.stop_line.y)
        assert stop is not None and stop.road_id == tl.road_id


def test_town_mixes_signalised_and_unsignalised_junctions() -> None:
    net = load_network("town")
    junctions = net.junctions()
    assert len(junctions) == 16
    four_way = [j for j in junctions if len({c.incoming_road for c in net.odr.junctions[j.id].connections}) == 4]
    assert any(j.signalised for j in four_way) and not all(j.signalised for j in four_way)
    for j in junctions:
        hit = net.locate(*j.center)
        assert hit is not None and hit.junction_id == j.id
        assert len(j.polygon) >= 4
    road_ids = set(net.odr.roads)
    assert not road_ids & set(net.odr.junctions), "junction ids must not clash with road ids (CARLA quirk)"
