"""`RoadNetwork`: the simulator server's view of an OpenDRIVE map, in CARLA's world frame.

Coordinates. CARLA's world frame is left-handed (x forward/east, y to the right/south, z up, yaw
clockwise in degrees seen from above). The stock client builds it from OpenDRIVE by flipping y:
an OpenDRIVE point (x, y) with heading h becomes location (x, -y) with yaw -degrees(h); lanes with
positive ids (left of the reference line, driven against increasing s) get yaw + 180. z is the road's
elevation polynomial. This was checked against `carla.Map(name, xodr).generate_waypoints()` and
`get_waypoint_xodr()` of the 0.9.16 client, and `tests/maps` keeps checking it on every shipped map.
All poses returned here are `Pose(x, y, z, yaw_deg)` in that frame, yaw in [-180, 180).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from envs.maps.geometry import wrap_angle
from envs.maps.opendrive import TRAFFIC_LIGHT_TYPE, Lane, LaneSection, MapError, OpenDrive, Road, Signal, parse

_SAMPLE_STEP = 1.0  # metres between samples of lane polylines and of the locate index
_CELL = 8.0  # metres: cell size of the locate grid


class Pose(NamedTuple):
    x: float
    y: float
    z: float
    yaw: float  # degrees, CARLA convention


class LaneHit(NamedTuple):
    """Where a world point lies: the lane of a road, and its OpenDRIVE (s, t) on that road."""

    road_id: int
    lane_id: int
    section_index: int
    s: float
    t: float
    lane_type: str
    junction_id: int  # -1 outside junctions
    z: float  # surface height: road elevation plus the lane's kerb height (raised sidewalks)


@dataclass(frozen=True)
class LaneGeometry:
    """One lane of one lane section, sampled every ~1 m along s, in world coordinates (arrays (N, 3)).

    `inner` is the border towards the road's reference line, `outer` the border away from it; the marks
    are the OpenDRIVE roadMark types painted on those borders at the section start ("none" for kerbs).
    """

    road_id: int
    section_index: int
    lane_id: int
    lane_type: str
    junction_id: int
    s: np.ndarray
    center: np.ndarray
    inner: np.ndarray
    outer: np.ndarray
    inner_mark: str
    outer_mark: str
    height: float


@dataclass(frozen=True)
class TriggerVolume:
    center: tuple[float, float, float]
    extent: tuple[float, float, float]  # half sizes along the box's x (lane direction), y, z
    yaw: float


@dataclass(frozen=True)
class TrafficLight:
    """A dynamic signal of type 1000001 and what it controls.

    `pose` is the signal's own (s, t, zOffset, hOffset) position; CARLA's landmark for it stands within
    0.25 m of it (the client nudges landmarks along the road). `stop_line` is the middle of the controlled
    lanes at the signal's s, facing the controlled traffic; the trigger volume covers the last 3 m before it.
    """

    id: str
    name: str
    road_id: int
    s: float
    lane_ids: tuple[int, ...]
    junction_id: int  # -1 if the light does not stand at a junction
    pose: Pose
    stop_line: Pose
    trigger: TriggerVolume


@dataclass(frozen=True)
class JunctionInfo:
    id: int
    name: str
    center: tuple[float, float]
    polygon: tuple[tuple[float, float], ...]  # convex hull of its connecting lanes, counter-clockwise in x/y
    signalised: bool
    traffic_light_ids: tuple[str, ...]


def _yaw(heading_rad: float | np.ndarray) -> np.ndarray:
    """OpenDRIVE heading (rad, counter-clockwise) to CARLA yaw (deg), wrapped to [-180, 180)."""
    return wrap_angle(-np.degrees(heading_rad))


def _hull(points: np.ndarray) -> list[tuple[float, float]]:
    """Convex hull (monotone chain), counter-clockwise in the given x/y."""
    pts = sorted(set(map(tuple, np.round(points, 3))))
    if len(pts) < 3:
        return [(float(p[0]), float(p[1])) for p in pts]

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    upper: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return [(float(x), float(y)) for x, y in lower[:-1] + upper[:-1]]


class RoadNetwork:
    """Roads, lanes, junctions and traffic lights of one map, queried in CARLA's world frame."""

    def __init__(self, odr: OpenDrive):
        self.name = odr.name
        self.odr = odr
        self._index: tuple[np.ndarray, ...] | None = None
        self._cells: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def from_xodr(cls, text: str, name: str) -> RoadNetwork:
        return cls(parse(text, name))

    # -- lane geometry in the OpenDRIVE frame ------------------------------------------------------------

    def road(self, road_id: int) -> Road:
        try:
            return self.odr.roads[road_id]
        except KeyError:
            raise MapError(f"map {self.name!r}: no road {road_id}") from None

    @staticmethod
    def _borders(road: Road, section: LaneSection, lane: Lane, s: np.ndarray) -> tuple[np.ndarray, ...]:
        """t of the inner and outer border of a lane and d(t_center)/ds, at road arc lengths s."""
        sign = 1 if lane.id > 0 else -1
        ds = s - section.s0
        inner = road.lane_offset.value(s).copy()
        slope = road.lane_offset.slope(s).copy()
        for other in section.side(sign):
            if abs(other.id) >= abs(lane.id):
                break
            inner += sign * other.width.value(ds)
            slope += sign * other.width.slope(ds)
        outer = inner + sign * lane.width.value(ds)
        center_slope = slope + sign * 0.5 * lane.width.slope(ds)
        return inner, outer, center_slope

    def _world(self, road: Road, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        x, y, h = road.reference.evaluate(s)
        ox, oy = x - t * np.sin(h), y + t * np.cos(h)
        return np.stack([ox, -oy, road.elevation.value(s)], axis=-1)

    def _section_lane(self, road: Road, lane_id: int, s: float) -> tuple[int, LaneSection, Lane]:
        idx = road.section_index(s)
        # At a section boundary the lane may exist only in the previous section.
        for i in (idx, idx - 1):
            if 0 <= i < len(road.sections) and lane_id in road.sections[i].lanes:
                return i, road.sections[i], road.sections[i].lanes[lane_id]
        raise MapError(f"map {self.name!r}: road {road.id} has no lane {lane_id} at s={s:.2f}")

    # -- public queries -------------------------------------------------------------------------------

    def lane_pose(self, road_id: int, lane_id: int, s: float) -> Pose:
        """Pose at the lane centre, facing the lane's driving direction (as CARLA's waypoint transform)."""
        road = self.road(road_id)
        s = min(max(float(s), 0.0), road.length)
        _, section, lane = self._section_lane(road, lane_id, s)
        sa = np.array([s])
        inner, outer, slope = self._borders(road, section, lane, sa)
        p = self._world(road, sa, 0.5 * (inner + outer))[0]
        _, _, h = road.reference.evaluate(sa)
        heading = h[0] + math.atan(slope[0]) + (math.pi if lane_id > 0 else 0.0)
        return Pose(float(p[0]), float(p[1]), float(p[2]), float(_yaw(heading)))

    def spawn_points(self, spacing: float = 20.0, margin: float = 6.0, z_offset: float = 0.3) -> list[Pose]:
        """Poses on driving lanes outside junctions, every `spacing` m, `margin` m clear of road ends.

        z is `z_offset` above the road surface so that vehicles spawn without touching it (CARLA's own
        spawn points float a few decimetres above the road as well). Deterministic order.
        """
        out: list[Pose] = []
        for road in sorted(self.odr.roads.values(), key=lambda r: r.id):
            if road.junction != -1 or road.length < 2 * margin:
                continue
            count = int((road.length - 2 * margin) // spacing) + 1
            first = 0.5 * (road.length - (count - 1) * spacing)
            for s in first + spacing * np.arange(count):
                section = road.sections[road.section_index(float(s))]
                for lane_id in sorted(section.lanes, key=lambda i: (i > 0, abs(i))):
                    if section.lanes[lane_id].type == "driving":
                        p = self.lane_pose(road.id, lane_id, float(s))
                        out.append(Pose(p.x, p.y, p.z + z_offset, p.yaw))
        return out

    def lanes(self, step: float = _SAMPLE_STEP) -> list[LaneGeometry]:
        """Every lane of every section sampled along s (ends included) for drawing."""
        out = []
        for road in sorted(self.odr.roads.values(), key=lambda r: r.id):
            for i, section in enumerate(road.sections):
                n = max(2, int(math.ceil((section.s1 - section.s0) / step)) + 1)
                s = np.linspace(section.s0, section.s1, n)
                for lane_id in sorted(section.lanes):
                    lane = section.lanes[lane_id]
                    inner, outer, _ = self._borders(road, section, lane, s)
                    prev = section.side(1 if lane_id > 0 else -1)
                    inner_lane = next((ln for ln in prev if abs(ln.id) == abs(lane_id) - 1), None)
                    inner_mark = (inner_lane.mark_at(0.0) if inner_lane else
                                  (section.center_marks[0].type if section.center_marks else "none"))
                    out.append(LaneGeometry(
                        road.id, i, lane_id, lane.type, road.junction, s,
                        self._world(road, s, 0.5 * (inner + outer)), self._world(road, s, inner),
                        self._world(road, s, outer), inner_mark, lane.mark_at(0.0), lane.height))
        return out

    def _light_junction(self, road: Road, signal: Signal, orientation: str) -> int:
        if road.junction != -1:  # a reference on a road of the junction itself (CARLA's towns)
            return road.junction
        link = road.successor if orientation == "+" else road.predecessor
        if link is not None and link.element_type == "junction":
            return link.element_id
        for j in self.odr.junctions.values():
            for cid in j.controllers:
                ctrl = self.odr.controllers.get(cid)
                if ctrl and signal.id in ctrl.signal_ids:
                    return j.id
        return -1

    @staticmethod
    def _controlled_lanes(section: LaneSection, orientation: str, validity) -> tuple[int, ...]:
        if validity:
            ids = {i for a, b in validity for i in range(min(a, b), max(a, b) + 1) if i != 0}
        else:
            sign = {"+": -1, "-": 1}.get(orientation, 0)
            ids = {i for i in section.lanes if sign == 0 or i * sign > 0}
        return tuple(sorted(i for i in ids if i in section.lanes and section.lanes[i].type == "driving"))

    def _light_placements(self, road: Road, signal: Signal) -> list[tuple[Road, float, str, tuple]]:
        """Where a traffic light applies, in order of preference: its own road, then each `<signalReference>` to it
        (by road id, then s). CARLA's towns put the signal beside the road and give the lanes it controls by
        references on the roads entering the junction."""
        own = [(road, sig_s, signal.orientation, signal.validity)
               for sig_s in (min(max(signal.s, 0.0), road.length),)]
        refs = sorted(((r, min(max(ref.s, 0.0), r.length), ref.orientation, ref.validity)
                       for r in self.odr.roads.values() for ref in r.signal_references if ref.id == signal.id),
                      key=lambda p: (p[0].id, p[1]))
        return own + refs

    def traffic_lights(self) -> list[TrafficLight]:
        """One record per dynamic traffic-light signal (type 1000001), sorted by id: the head stands where the
        signal is; the stop line and trigger volume are on the first placement (`_light_placements`) that has
        driving lanes for it."""
        out = []
        for road in self.odr.roads.values():
            for sig in road.signals:
                if sig.type != TRAFFIC_LIGHT_TYPE:
                    continue
                s = min(max(sig.s, 0.0), road.length)
                sa = np.array([s])
                _, _, h = road.reference.evaluate(sa)
                p = self._world(road, sa, np.array([sig.t]))[0]
                pose = Pose(float(p[0]), float(p[1]), float(p[2] + sig.z_offset), float(_yaw(h[0] + sig.h_offset)))
                for at, at_s, orientation, validity in self._light_placements(road, sig):
                    section = at.sections[at.section_index(at_s)]
                    lane_ids = self._controlled_lanes(section, orientation, validity)
                    if lane_ids:
                        break
                else:
                    raise MapError(f"road {road.id}: traffic light {sig.id} controls no driving lane (on its road "
                                   "or any road with a <signalReference> to it)")
                at_sa = np.array([at_s])
                _, _, at_h = at.reference.evaluate(at_sa)
                borders = [self._borders(at, section, section.lanes[i], at_sa) for i in lane_ids]
                ts = [float(b[0][0]) for b in borders] + [float(b[1][0]) for b in borders]
                t_mid, half = 0.5 * (min(ts) + max(ts)), 0.5 * (max(ts) - min(ts))
                forward = 1.0 if lane_ids[0] < 0 else -1.0
                stop = self._world(at, at_sa, np.array([t_mid]))[0]
                yaw = float(_yaw(at_h[0] + (0.0 if forward > 0 else math.pi)))
                back_s = at_s - forward * 1.5
                if 0.0 <= back_s <= at.length:
                    trig = self._world(at, np.array([back_s]), np.array([t_mid]))[0]
                else:  # a reference at a junction road's start: the box lies on the road entering it
                    trig = stop - 1.5 * np.array([math.cos(math.radians(yaw)), math.sin(math.radians(yaw)), 0.0])
                out.append(TrafficLight(
                    sig.id, sig.name, at.id, at_s, lane_ids, self._light_junction(at, sig, orientation), pose,
                    Pose(float(stop[0]), float(stop[1]), float(stop[2]), yaw),
                    TriggerVolume((float(trig[0]), float(trig[1]), float(trig[2] + 1.0)), (1.5, half, 1.0), yaw)))
        return sorted(out, key=lambda tl: tl.id)

    def junctions(self) -> list[JunctionInfo]:
        lights: dict[int, list[str]] = {}
        for tl in self.traffic_lights():
            lights.setdefault(tl.junction_id, []).append(tl.id)
        geoms: dict[int, list[np.ndarray]] = {}
        for lane in self.lanes(step=2.0):
            if lane.junction_id != -1:
                geoms.setdefault(lane.junction_id, []).extend([lane.inner[:, :2], lane.outer[:, :2]])
        out = []
        for jid in sorted(self.odr.junctions):
            j = self.odr.junctions[jid]
            pts = np.concatenate(geoms[jid]) if jid in geoms else np.zeros((1, 2))
            hull = _hull(pts)
            corners = np.array(hull)
            center = tuple(float(v) for v in 0.5 * (corners.min(axis=0) + corners.max(axis=0)))
            ids = tuple(sorted(lights.get(jid, [])))
            out.append(JunctionInfo(jid, j.name, center, tuple(hull), bool(ids), ids))  # type: ignore[arg-type]
        return out

    # -- locate -----------------------------------------------------------------------------------------

    def _build_index(self) -> None:
        """Reference-line chords of every road, and a grid of the cells each chord's road width covers."""
        starts, ends, s_start, roads, reach = [], [], [], [], []
        for road in self.odr.roads.values():
            n = max(2, int(math.ceil(road.length / _SAMPLE_STEP)) + 1)
            s = np.linspace(0.0, road.length, n)
            x, y, _ = road.reference.evaluate(s)
            half = np.zeros_like(s)
            for section in road.sections:
                mask = (s >= section.s0 - 1e-9) & (s <= section.s1 + 1e-9)
                for lane in section.lanes.values():
                    inner, outer, _ = self._borders(road, section, lane, s[mask])
                    half[mask] = np.maximum(half[mask], np.maximum(abs(inner), abs(outer)))
            pts = np.stack([x, y], axis=1)
            starts.append(pts[:-1])
            ends.append(pts[1:])
            s_start.append(s[:-1])
            roads.append(np.full(n - 1, road.id))
            reach.append(np.maximum(half[:-1], half[1:]) + 0.5)
        a, b = np.concatenate(starts), np.concatenate(ends)
        self._index = (a, b, np.concatenate(s_start), np.concatenate(roads), np.concatenate(reach))
        cells: dict[tuple[int, int], list[int]] = {}
        r = self._index[4]
        lo = np.floor((np.minimum(a, b) - r[:, None]) / _CELL).astype(int)
        hi = np.floor((np.maximum(a, b) + r[:, None]) / _CELL).astype(int)
        for k in range(len(a)):
            for cx in range(lo[k, 0], hi[k, 0] + 1):
                for cy in range(lo[k, 1], hi[k, 1] + 1):
                    cells.setdefault((cx, cy), []).append(k)
        self._cells = {key: np.array(v) for key, v in cells.items()}

    def locate(self, x: float, y: float) -> LaneHit | None:
        """The lane under world point (x, y), or None off every lane.

        Where lanes overlap (inside junctions, or at the seam between a road and a connecting road) a lane
        of a road outside any junction wins, then the lane whose centre is nearest.
        """
        if self._index is None:
            self._build_index()
        a, b, s_start, road_ids, _ = self._index  # type: ignore[misc]
        p = np.array([x, -y])
        cand = self._cells.get((int(math.floor(p[0] / _CELL)), int(math.floor(p[1] / _CELL))))
        if cand is None:
            return None
        ab = b[cand] - a[cand]
        seg_len = np.hypot(ab[:, 0], ab[:, 1])
        ap = p - a[cand]
        u_raw = (ap * ab).sum(axis=1) / np.maximum(seg_len**2, 1e-12)
        u = np.clip(u_raw, 0.0, 1.0)
        foot = a[cand] + u[:, None] * ab
        dist = np.hypot(*(p - foot).T)
        reach = self._index[4][cand]
        order = np.argsort(dist, kind="stable")
        order = order[dist[order] <= reach[order]]
        _, first = np.unique(road_ids[cand[order]], return_index=True)
        hits = []
        for k in order[np.sort(first)]:
            road = self.odr.roads[int(road_ids[cand[k]])]
            s = float(s_start[cand[k]] + u_raw[k] * seg_len[k])
            if s < -0.01 or s > road.length + 0.01:
                continue
            s = min(max(s, 0.0), road.length)
            t = float((ab[k, 0] * ap[k, 1] - ab[k, 1] * ap[k, 0]) / max(seg_len[k], 1e-12))
            hit = self._lane_at(road, s, t)
            if hit is not None:
                hits.append(hit)
        if not hits:
            return None
        return min(hits, key=lambda h: (h[0].junction_id != -1, h[1]))[0]

    def _lane_at(self, road: Road, s: float, t: float) -> tuple[LaneHit, float] | None:
        """The lane of `road` containing lateral offset t at s, with t's distance from that lane's centre."""
        sidx = road.section_index(s)
        section = road.sections[sidx]
        ds = s - section.s0
        for sign in (1, -1):
            border = road.lane_offset.at(s)
            for lane in section.side(sign):
                outer = border + sign * lane.width.at(ds)
                lo, hi = min(border, outer), max(border, outer)
                if lo - 1e-6 <= t <= hi + 1e-6:
                    z = road.elevation.at(s) + lane.height
                    hit = LaneHit(road.id, lane.id, sidx, s, t, lane.type, road.junction, z)
                    return hit, abs(t - 0.5 * (lo + hi))
                border = outer
        return None
