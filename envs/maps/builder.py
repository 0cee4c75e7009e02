"""Small OpenDRIVE 1.4 writer: road and junction specifications in, XML text out.

The generator describes roads by a start pose and a chain of (length, start curvature, end curvature)
pieces, lanes by id/type/width/mark, and junctions by their arms (road ends); this module derives the
connecting roads, lane links, traffic-light signals and controllers from that, so every map shares one
correct way of wiring a junction. Coordinates are OpenDRIVE's (x east, y north, heading counter-clockwise).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Literal

from envs.maps.geometry import Cubic, Segment, end_pose, wrap_angle
from envs.maps.opendrive import TRAFFIC_LIGHT_TYPE

Contact = Literal["start", "end"]
# Traffic lights stand this far before the junction edge; it is also where the stop line is.
STOP_LINE_SETBACK = 1.0


@dataclass
class LaneSpec:
    """One lane of a road; `mark` is the roadMark on its outer border (OpenDRIVE puts it there)."""

    id: int
    type: str
    width: float
    mark: str = "none"
    mark_color: str = "standard"
    height: float = 0.0
    speed: float | None = None
    predecessor: int | None = None
    successor: int | None = None


@dataclass
class SignalSpec:
    id: str
    s: float
    t: float
    orientation: Literal["+", "-"]
    from_lane: int
    to_lane: int
    name: str = ""
    z_offset: float = 0.0
    height: float = 4.0


@dataclass
class Link:
    element_type: Literal["road", "junction"]
    element_id: int
    contact: Contact | None = None


@dataclass
class RoadSpec:
    """A road: start pose, planView pieces (length, curvature at start, curvature at end) and its lanes."""

    id: int
    name: str
    x: float
    y: float
    hdg: float
    pieces: list[tuple[float, float, float]]
    lanes: list[LaneSpec]
    center_mark: str = "none"
    center_color: str = "standard"
    junction: int = -1
    speed_kmh: float = 50.0
    predecessor: Link | None = None
    successor: Link | None = None
    signals: list[SignalSpec] = field(default_factory=list)
    elevation: list[Cubic] = field(default_factory=list)
    section_starts: list[float] = field(default_factory=list)

    def segments(self) -> list[Segment]:
        out: list[Segment] = []
        x, y, h, s = self.x, self.y, self.hdg, 0.0
        for length, k0, k1 in self.pieces:
            seg = Segment(s, x, y, h, length, k0, k1)
            out.append(seg)
            x, y, h = end_pose(seg)
            s += length
        return out

    @property
    def length(self) -> float:
        return sum(p[0] for p in self.pieces)

    def side(self, sign: int) -> list[LaneSpec]:
        """Lanes on one side (sign +1 left, -1 right), innermost first."""
        return sorted((ln for ln in self.lanes if ln.id * sign > 0), key=lambda ln: abs(ln.id))


@dataclass
class Arm:
    """A road end that meets a junction."""

    road: RoadSpec
    contact: Contact

    def into_pose(self) -> tuple[float, float, float]:
        """Reference-line point at the junction edge and the heading pointing into the junction."""
        segs = self.road.segments()
        if self.contact == "end":
            return end_pose(segs[-1])
        return segs[0].x, segs[0].y, segs[0].hdg + math.pi

    def incoming_sign(self) -> int:
        """Lane-id sign of lanes driving into the junction (right lanes at a road's end)."""
        return -1 if self.contact == "end" else 1

    def driving(self, sign: int) -> list[LaneSpec]:
        return [ln for ln in self.road.side(sign) if ln.type == "driving"]

    def inner_offset(self, sign: int, lane: LaneSpec) -> float:
        return sum(ln.width for ln in self.road.side(sign) if abs(ln.id) < abs(lane.id))


@dataclass
class Connection:
    incoming_road: int
    connecting_road: int
    from_lane: int


@dataclass
class JunctionSpec:
    id: int
    name: str
    connections: list[Connection]
    controller_id: int | None = None
    signal_ids: list[str] = field(default_factory=list)


def connecting_pieces(p0: tuple[float, float], h0: float, p1: tuple[float, float],
                      h1: float) -> list[tuple[float, float, float]]:
    """Line and arc pieces from pose (p0, h0) to (p1, h1): straight through, or a quarter turn."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    along = dx * math.cos(h0) + dy * math.sin(h0)
    lateral = -dx * math.sin(h0) + dy * math.cos(h0)
    turn = wrap_angle(h1 - h0, math.pi)
    if abs(turn) < 1e-9:
        if abs(lateral) > 1e-6 or along <= 0:
            raise ValueError(f"cannot connect straight: lateral offset {lateral:.3f} m, length {along:.3f} m")
        return [(along, 0.0, 0.0)]
    if abs(abs(turn) - math.pi / 2) > 1e-9 or along <= 0 or lateral * turn <= 0:
        raise ValueError(f"only quarter turns are supported (turn {math.degrees(turn):.1f} deg)")
    radius = min(along, abs(lateral))
    k = math.copysign(1.0 / radius, turn)
    arc = (radius * math.pi / 2, k, k)
    pieces = []
    if along - radius > 1e-6:
        pieces.append((along - radius, 0.0, 0.0))
    pieces.append(arc)
    if abs(lateral) - radius > 1e-6:
        pieces.append((abs(lateral) - radius, 0.0, 0.0))
    return pieces


def build_junction(
    jid: int,
    arms: list[Arm],
    next_road_id: int,
    signalised: bool,
    name: str = "",
) -> tuple[JunctionSpec, list[RoadSpec]]:
    """Wire junction `jid`: straight, left and right connecting roads, links, and (if signalised) one light per arm.

    `jid` must differ from every road id: CARLA's client reads a road link to a junction whose id is also
    a road's as a link to that road, and the junction's lanes then have no successors.

    Straight-on traffic keeps its lane, left turns go from the innermost lane to the innermost lane and
    right turns from the outermost to the outermost, as on real multi-lane junctions. Arms are linked to
    the junction in place; the connecting roads are returned.
    """
    junction = JunctionSpec(jid, name or f"junction{jid}", [])
    roads: list[RoadSpec] = []
    for arm in arms:
        link = Link("junction", jid)
        if arm.contact == "end":
            arm.road.successor = link
        else:
            arm.road.predecessor = link
    for i, arm_in in enumerate(arms):
        sin = arm_in.incoming_sign()
        lanes_in = arm_in.driving(sin)
        x0, y0, h0 = arm_in.into_pose()
        for j, arm_out in enumerate(arms):
            if i == j:
                continue
            sout = -arm_out.incoming_sign()
            lanes_out = arm_out.driving(sout)
            xj, yj, hj = arm_out.into_pose()
            h1 = hj + math.pi
            turn = wrap_angle(h1 - h0, math.pi)
            if abs(turn) < 1e-6:
                pairs = list(zip(lanes_in, lanes_out))
            elif turn > 0:
                pairs = [(lanes_in[0], lanes_out[0])]
            else:
                pairs = [(lanes_in[-1], lanes_out[-1])]
            for lane_in, lane_out in pairs:
                o_in = arm_in.inner_offset(sin, lane_in)
                o_out = arm_out.inner_offset(sout, lane_out)
                # Lanes lie to the right of the travel direction, so the connecting road's reference line
                # runs along their inner borders and its only lane is -1.
                p0 = (x0 + o_in * math.sin(h0), y0 - o_in * math.cos(h0))
                p1 = (xj + o_out * math.sin(h1), yj - o_out * math.cos(h1))
                rid = next_road_id + len(roads)
                roads.append(RoadSpec(
                    id=rid, name=f"j{jid}_{arm_in.road.id}_{arm_out.road.id}_{abs(lane_in.id)}",
                    x=p0[0], y=p0[1], hdg=h0, pieces=connecting_pieces(p0, h0, p1, h1),
                    lanes=[LaneSpec(-1, "driving", lane_in.width, speed=lane_in.speed,
                                    predecessor=lane_in.id, successor=lane_out.id)],
                    junction=jid, speed_kmh=arm_in.road.speed_kmh,
                    predecessor=Link("road", arm_in.road.id, arm_in.contact),
                    successor=Link("road", arm_out.road.id, arm_out.contact),
                ))
                junction.connections.append(Connection(arm_in.road.id, rid, lane_in.id))
    if signalised:
        junction.controller_id = jid
        for k, arm in enumerate(arms):
            sign = arm.incoming_sign()
            lanes = arm.driving(sign)
            if not lanes:
                continue
            # The pole stands on the outer edge of the incoming side (sidewalk or shoulder).
            half = sum(ln.width for ln in arm.road.side(sign))
            s = arm.road.length - STOP_LINE_SETBACK if arm.contact == "end" else STOP_LINE_SETBACK
            sid = str(jid * 100 + k + 1)
            ids = sorted(ln.id for ln in lanes)
            arm.road.signals.append(SignalSpec(
                sid, s, sign * (half - 0.5), "+" if sign < 0 else "-", ids[0], ids[-1], name=f"tl_{sid}"))
            junction.signal_ids.append(sid)
    return junction, roads


def _num(v: float) -> str:
    return f"{v:.10g}" if v != 0 else "0"


def _sub(parent: ET.Element, tag: str, **attrs: object) -> ET.Element:
    values = {k.rstrip("_"): (_num(v) if isinstance(v, float) else str(v)) for k, v in attrs.items()}
    return ET.SubElement(parent, tag, values)


def _link(parent: ET.Element, tag: str, link: Link | None) -> None:
    if link is None:
        return
    attrs: dict[str, object] = {"elementType": link.element_type, "elementId": link.element_id}
    if link.contact:
        attrs["contactPoint"] = link.contact
    _sub(parent, tag, **attrs)


def _lane(parent: ET.Element, lane: LaneSpec, next_id: int | None, prev_id: int | None) -> None:
    el = _sub(parent, "lane", id=lane.id, type=lane.type, level="false")
    link = _sub(el, "link")
    if prev_id is not None:
        _sub(link, "predecessor", id=prev_id)
    if next_id is not None:
        _sub(link, "successor", id=next_id)
    _sub(el, "width", sOffset=0.0, a=lane.width, b=0.0, c=0.0, d=0.0)
    _sub(el, "roadMark", sOffset=0.0, type=lane.mark, weight="standard", color=lane.mark_color,
         material="standard", width=0.15 if lane.mark != "none" else 0.0,
         laneChange="both" if lane.mark == "broken" else "none")
    if lane.speed is not None:
        _sub(el, "speed", sOffset=0.0, max=lane.speed, unit="m/s")
    if lane.height:
        _sub(el, "height", sOffset=0.0, inner=lane.height, outer=lane.height)


def _road(root: ET.Element, road: RoadSpec) -> None:
    el = _sub(root, "road", name=road.name, length=road.length, id=road.id, junction=road.junction)
    link = _sub(el, "link")
    _link(link, "predecessor", road.predecessor)
    _link(link, "successor", road.successor)
    rtype = _sub(el, "type", s=0.0, type="town")
    _sub(rtype, "speed", max=road.speed_kmh, unit="km/h")
    plan = _sub(el, "planView")
    for seg in road.segments():
        g = _sub(plan, "geometry", s=seg.s0, x=seg.x, y=seg.y, hdg=seg.hdg, length=seg.length)
        if seg.is_spiral:
            _sub(g, "spiral", curvStart=seg.curv_start, curvEnd=seg.curv_end)
        elif seg.curv_start != 0.0:
            _sub(g, "arc", curvature=seg.curv_start)
        else:
            _sub(g, "line")
    elev = _sub(el, "elevationProfile")
    for c in road.elevation or [Cubic(0.0, 0.0)]:
        _sub(elev, "elevation", s=c.s0, a=c.a, b=c.b, c=c.c, d=c.d)
    _sub(el, "lateralProfile")
    lanes = _sub(el, "lanes")
    _sub(lanes, "laneOffset", s=0.0, a=0.0, b=0.0, c=0.0, d=0.0)
    starts = [0.0, *road.section_starts]
    for n, s0 in enumerate(starts):
        first, last = n == 0, n == len(starts) - 1
        sec = _sub(lanes, "laneSection", s=s0)
        for side, sign in (("left", 1), ("center", 0), ("right", -1)):
            group = _sub(sec, side)
            if sign == 0:
                c_lane = _sub(group, "lane", id=0, type="none", level="false")
                _sub(c_lane, "roadMark", sOffset=0.0, type=road.center_mark, weight="standard",
                     color=road.center_color, material="standard",
                     width=0.15 if road.center_mark != "none" else 0.0, laneChange="none")
                continue
            for lane in sorted(road.side(sign), key=lambda ln: -ln.id):
                # Inside a road, consecutive sections keep lane ids; at the road's ends the spec's links apply.
                _lane(group, lane, lane.successor if last else lane.id, lane.predecessor if first else lane.id)
            if not len(group):
                sec.remove(group)
    _sub(el, "objects")
    signals = _sub(el, "signals")
    for sig in road.signals:
        s_el = _sub(signals, "signal", s=sig.s, t=sig.t, id=sig.id, name=sig.name, dynamic="yes",
                    orientation=sig.orientation, zOffset=sig.z_offset, country="OpenDRIVE",
                    type=TRAFFIC_LIGHT_TYPE, subtype="-1", value=-1.0, height=sig.height, width=0.5,
                    hOffset=0.0, pitch=0.0, roll=0.0)
        _sub(s_el, "validity", fromLane=sig.from_lane, toLane=sig.to_lane)


def write_xodr(name: str, roads: list[RoadSpec], junctions: list[JunctionSpec]) -> str:
    """Serialise a map; the same input always gives byte-identical text (no dates, fixed number format)."""
    root = ET.Element("OpenDRIVE")
    header = _sub(root, "header", revMajor=1, revMinor=4, name=name, version="1.00",
                  vendor="slimdrive")
    # CARLA warns without a geoReference; a transverse Mercator at (0, 0) keeps GNSS trivial.
    ET.SubElement(header, "geoReference").text = (
        "+proj=tmerc +lat_0=0 +lon_0=0 +k=1 +x_0=0 +y_0=0 +datum=WGS84 +units=m +geoidgrids=egm96_15.gtx "
        "+vunits=m +no_defs")
    for road in sorted(roads, key=lambda r: r.id):
        _road(root, road)
    for j in junctions:
        if j.controller_id is None:
            continue
        ctrl = _sub(root, "controller", id=j.controller_id, name=f"controller{j.id}", sequence=0)
        for sid in j.signal_ids:
            _sub(ctrl, "control", signalId=sid, type="0")
    for j in junctions:
        jel = _sub(root, "junction", id=j.id, name=j.name)
        for n, c in enumerate(j.connections):
            cel = _sub(jel, "connection", id=n, incomingRoad=c.incoming_road, connectingRoad=c.connecting_road,
                       contactPoint="start")
            _sub(cel, "laneLink", from_=c.from_lane, to=-1)
        if j.controller_id is not None:
            _sub(jel, "controller", id=j.controller_id, type="0", sequence=0)
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
