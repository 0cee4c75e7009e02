"""OpenDRIVE (1.4/1.5 subset) parser: XML text in, a plain model of roads, lanes, junctions and signals out.

Supported: planView line/arc/spiral, elevationProfile, laneOffset, laneSection with lane width polynomials,
lane types and roadMarks, lane heights, road/lane links, junction connections and controllers, signals
with validity. paramPoly3/poly3 geometries and lane <border> records are refused with a MapError naming
the road, because silently approximating them would disagree with CARLA's client.

The model keeps OpenDRIVE's own frame (x east, y north, counter-clockwise heading); `network.py` turns it
into CARLA world poses. This module knows nothing of the rest of the project.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from envs.maps.geometry import Cubic, PiecewiseCubic, ReferenceLine, Segment

TRAFFIC_LIGHT_TYPE = "1000001"  # OpenDRIVE signal type of a traffic light, as CARLA's landmarks use it


class MapError(ValueError):
    """An OpenDRIVE document that cannot be used; the message names the element and what is wrong."""


@dataclass(frozen=True)
class RoadMark:
    s_offset: float  # from the start of the lane section
    type: str  # OpenDRIVE type: "solid", "broken", "solid solid", "none", ...
    color: str
    width: float


@dataclass(frozen=True)
class Lane:
    id: int
    type: str  # "driving", "sidewalk", "parking", "shoulder", "none", ...
    width: PiecewiseCubic  # of s measured from the start of the lane section
    marks: tuple[RoadMark, ...]  # on the lane's outer border
    height: float  # kerb height (sidewalks), 0 when absent
    predecessor: int | None
    successor: int | None

    def mark_at(self, ds: float) -> str:
        """RoadMark type on the outer border at ds from the section start ("none" if undeclared)."""
        current = "none"
        for mark in self.marks:
            if mark.s_offset <= ds + 1e-9:
                current = mark.type
        return current


@dataclass(frozen=True)
class LaneSection:
    s0: float
    s1: float
    lanes: dict[int, Lane]  # without the centre lane 0
    center_marks: tuple[RoadMark, ...]

    def side(self, sign: int) -> list[Lane]:
        """Lanes of one side (+1 left, -1 right), innermost first."""
        return sorted((ln for ln in self.lanes.values() if ln.id * sign > 0), key=lambda ln: abs(ln.id))


@dataclass(frozen=True)
class Signal:
    id: str
    name: str
    s: float
    t: float
    orientation: str  # "+": applies to traffic along +s, "-": along -s, "none": both
    type: str
    subtype: str
    dynamic: bool
    z_offset: float
    height: float
    h_offset: float
    validity: tuple[tuple[int, int], ...]  # (fromLane, toLane) pairs; empty means every lane of its direction


@dataclass(frozen=True)
class SignalReference:
    id: str  # the referenced signal's id
    s: float
    t: float
    orientation: str
    validity: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RoadLink:
    element_type: str  # "road" or "junction"
    element_id: int
    contact: str | None  # "start"/"end" for roads


@dataclass(frozen=True)
class Road:
    id: int
    name: str
    length: float
    junction: int  # -1 outside junctions
    reference: ReferenceLine
    elevation: PiecewiseCubic
    lane_offset: PiecewiseCubic
    sections: tuple[LaneSection, ...]
    signals: tuple[Signal, ...]
    predecessor: RoadLink | None
    successor: RoadLink | None
    # <signalReference>s: a signal defined on another road that also applies here (CARLA's towns give the lanes a
    # traffic light controls this way, on the roads entering its junction)
    signal_references: tuple[SignalReference, ...] = ()

    def section_index(self, s: float) -> int:
        for i in range(len(self.sections) - 1, -1, -1):
            if self.sections[i].s0 <= s + 1e-9:
                return i
        return 0


@dataclass(frozen=True)
class Connection:
    incoming_road: int
    connecting_road: int
    contact: str
    lane_links: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Junction:
    id: int
    name: str
    connections: tuple[Connection, ...]
    controllers: tuple[str, ...]


@dataclass(frozen=True)
class Controller:
    id: str
    name: str
    signal_ids: tuple[str, ...]


@dataclass(frozen=True)
class OpenDrive:
    name: str
    roads: dict[int, Road]
    junctions: dict[int, Junction]
    controllers: dict[str, Controller]


def _where(el: ET.Element, road: int | None) -> str:
    return f"<{el.tag}>" + (f" of road {road}" if road is not None else "")


def _number(el: ET.Element, attr: str, road: int | None, default, kind, what: str):
    raw = el.get(attr)
    if raw is None or raw.strip() == "":
        if default is not None:
            return default
        raise MapError(f"{_where(el, road)}: missing attribute '{attr}'")
    try:
        return kind(raw)
    except ValueError:
        raise MapError(f"{_where(el, road)}: attribute '{attr}'={raw!r} is not {what}") from None


def _float(el: ET.Element, attr: str, road: int | None = None, default: float | None = None) -> float:
    return _number(el, attr, road, default, float, "a number")


def _int(el: ET.Element, attr: str, road: int | None = None, default: int | None = None) -> int:
    return _number(el, attr, road, default, int,
                   "an integer (CARLA's client needs numeric road, lane and junction ids)")


def _cubics(els: list[ET.Element], s_attr: str, road: int) -> PiecewiseCubic:
    pieces = sorted(
        (Cubic(_float(e, s_attr, road), _float(e, "a", road, 0.0), _float(e, "b", road, 0.0),
               _float(e, "c", road, 0.0), _float(e, "d", road, 0.0)) for e in els),
        key=lambda c: c.s0)
    return PiecewiseCubic(tuple(pieces))


def _segments(road_el: ET.Element, rid: int) -> tuple[Segment, ...]:
    plan = road_el.find("planView")
    geoms = plan.findall("geometry") if plan is not None else []
    if not geoms:
        raise MapError(f"road {rid}: <planView> has no <geometry>")
    out = []
    for g in geoms:
        s0, x, y = _float(g, "s", rid), _float(g, "x", rid), _float(g, "y", rid)
        hdg, length = _float(g, "hdg", rid), _float(g, "length", rid)
        if length <= 0:
            raise MapError(f"road {rid}: <geometry s={s0}> has non-positive length {length}")
        kinds = list(g)
        if len(kinds) != 1:
            raise MapError(f"road {rid}: <geometry s={s0}> must hold exactly one curve element")
        kind = kinds[0]
        if kind.tag == "line":
            out.append(Segment(s0, x, y, hdg, length))
        elif kind.tag == "arc":
            k = _float(kind, "curvature", rid)
            out.append(Segment(s0, x, y, hdg, length, k, k))
        elif kind.tag == "spiral":
            out.append(Segment(s0, x, y, hdg, length, _float(kind, "curvStart", rid), _float(kind, "curvEnd", rid)))
        else:
            raise MapError(f"road {rid}: <geometry s={s0}> uses <{kind.tag}>, which is not supported "
                           "(supported: line, arc, spiral)")
    out.sort(key=lambda seg: seg.s0)
    return tuple(out)


def _marks(lane_el: ET.Element, rid: int) -> tuple[RoadMark, ...]:
    return tuple(sorted(
        (RoadMark(_float(m, "sOffset", rid, 0.0), m.get("type", "none"), m.get("color", "standard"),
                  _float(m, "width", rid, 0.0)) for m in lane_el.findall("roadMark")),
        key=lambda m: m.s_offset))


def _lane(lane_el: ET.Element, rid: int) -> Lane:
    lid = _int(lane_el, "id", rid)
    if lane_el.find("border") is not None:
        raise MapError(f"road {rid}: lane {lid} uses <border>, which is not supported (use <width>)")
    widths = lane_el.findall("width")
    if not widths:
        raise MapError(f"road {rid}: lane {lid} has no <width>")
    link = lane_el.find("link")
    pred = succ = None
    if link is not None:
        if (p := link.find("predecessor")) is not None:
            pred = _int(p, "id", rid)
        if (q := link.find("successor")) is not None:
            succ = _int(q, "id", rid)
    height_el = lane_el.find("height")
    height = 0.0 if height_el is None else max(_float(height_el, "inner", rid, 0.0),
                                               _float(height_el, "outer", rid, 0.0))
    return Lane(lid, lane_el.get("type", "none"), _cubics(widths, "sOffset", rid), _marks(lane_el, rid),
                height, pred, succ)


def _sections(road_el: ET.Element, rid: int, length: float) -> tuple[LaneSection, ...]:
    lanes_el = road_el.find("lanes")
    secs = lanes_el.findall("laneSection") if lanes_el is not None else []
    if not secs:
        raise MapError(f"road {rid}: <lanes> has no <laneSection>")
    starts = sorted(_float(sec, "s", rid) for sec in secs)
    out = []
    for sec in sorted(secs, key=lambda e: _float(e, "s", rid)):
        s0 = _float(sec, "s", rid)
        later = [s for s in starts if s > s0 + 1e-9]
        lanes: dict[int, Lane] = {}
        for side in ("left", "right"):
            group = sec.find(side)
            for lane_el in group.findall("lane") if group is not None else []:
                lane = _lane(lane_el, rid)
                if lane.id == 0 or (side == "left") != (lane.id > 0):
                    raise MapError(f"road {rid}: lane {lane.id} listed under <{side}> at laneSection s={s0}")
                lanes[lane.id] = lane
        center = sec.find("center")
        center_lane = center.find("lane") if center is not None else None
        out.append(LaneSection(s0, later[0] if later else length, lanes,
                               _marks(center_lane, rid) if center_lane is not None else ()))
    return tuple(out)


def _signals(road_el: ET.Element, rid: int) -> tuple[Signal, ...]:
    group = road_el.find("signals")
    out = []
    for sig in group.findall("signal") if group is not None else []:
        sid = sig.get("id")
        if not sid:
            raise MapError(f"road {rid}: <signal> without id")
        validity = tuple((_int(v, "fromLane", rid), _int(v, "toLane", rid)) for v in sig.findall("validity"))
        out.append(Signal(sid, sig.get("name", ""), _float(sig, "s", rid), _float(sig, "t", rid, 0.0),
                          sig.get("orientation", "none"), sig.get("type", ""), sig.get("subtype", "-1"),
                          sig.get("dynamic", "no") == "yes", _float(sig, "zOffset", rid, 0.0),
                          _float(sig, "height", rid, 0.0), _float(sig, "hOffset", rid, 0.0), validity))
    return tuple(out)


def _signal_references(road_el: ET.Element, rid: int) -> tuple[SignalReference, ...]:
    group = road_el.find("signals")
    out = []
    for ref in group.findall("signalReference") if group is not None else []:
        sid = ref.get("id")
        if not sid:
            raise MapError(f"road {rid}: <signalReference> without id")
        validity = tuple((_int(v, "fromLane", rid), _int(v, "toLane", rid)) for v in ref.findall("validity"))
        out.append(SignalReference(sid, _float(ref, "s", rid), _float(ref, "t", rid, 0.0),
                                   ref.get("orientation", "none"), validity))
    return tuple(out)


def _road_link(link: ET.Element | None, tag: str, rid: int) -> RoadLink | None:
    el = link.find(tag) if link is not None else None
    if el is None:
        return None
    return RoadLink(el.get("elementType", "road"), _int(el, "elementId", rid), el.get("contactPoint"))


def _road(road_el: ET.Element) -> Road:
    rid = _int(road_el, "id")
    segments = _segments(road_el, rid)
    length = _float(road_el, "length", rid)
    reference = ReferenceLine(segments)
    if abs(reference.length - length) > 0.01 * max(1.0, length):
        raise MapError(f"road {rid}: length={length} but its planView geometries add up to {reference.length:.3f}")
    elevation_el = road_el.find("elevationProfile")
    lanes_el = road_el.find("lanes")
    link = road_el.find("link")
    return Road(
        id=rid, name=road_el.get("name", ""), length=length, junction=_int(road_el, "junction", rid, -1),
        reference=reference,
        elevation=_cubics(elevation_el.findall("elevation") if elevation_el is not None else [], "s", rid),
        lane_offset=_cubics(lanes_el.findall("laneOffset") if lanes_el is not None else [], "s", rid),
        sections=_sections(road_el, rid, length), signals=_signals(road_el, rid),
        predecessor=_road_link(link, "predecessor", rid), successor=_road_link(link, "successor", rid),
        signal_references=_signal_references(road_el, rid),
    )


def _junction(el: ET.Element) -> Junction:
    jid = _int(el, "id")
    conns = []
    for c in el.findall("connection"):
        links = tuple((_int(ll, "from"), _int(ll, "to")) for ll in c.findall("laneLink"))
        conns.append(Connection(_int(c, "incomingRoad"), _int(c, "connectingRoad"), c.get("contactPoint", "start"),
                                links))
    ctrls = tuple(c.get("id", "") for c in el.findall("controller"))
    return Junction(jid, el.get("name", ""), tuple(conns), ctrls)


def parse(text: str, name: str) -> OpenDrive:
    """Parse OpenDRIVE text; raises MapError naming the element (and road) at fault."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise MapError(f"map {name!r}: not well-formed XML ({exc})") from None
    if root.tag != "OpenDRIVE":
        raise MapError(f"map {name!r}: root element is <{root.tag}>, expected <OpenDRIVE>")
    roads: dict[int, Road] = {}
    for road_el in root.findall("road"):
        road = _road(road_el)
        if road.id in roads:
            raise MapError(f"map {name!r}: road id {road.id} is used twice")
        roads[road.id] = road
    if not roads:
        raise MapError(f"map {name!r}: no <road>")
    junctions = {j.id: j for j in map(_junction, root.findall("junction"))}
    for road in roads.values():
        if road.junction != -1 and road.junction not in junctions:
            raise MapError(f"road {road.id}: junction={road.junction} names no <junction>")
        for link in (road.predecessor, road.successor):
            if link is None:
                continue
            known = roads if link.element_type == "road" else junctions
            if link.element_id not in known:
                raise MapError(f"road {road.id}: link to {link.element_type} {link.element_id}, which does not exist")
    for j in junctions.values():
        for c in j.connections:
            for rid in (c.incoming_road, c.connecting_road):
                if rid not in roads:
                    raise MapError(f"junction {j.id}: connection names road {rid}, which does not exist")
    controllers = {}
    for c in root.findall("controller"):
        cid = c.get("id", "")
        signals = tuple(x.get("signalId", "") for x in c.findall("control"))
        controllers[cid] = Controller(cid, c.get("name", ""), signals)
    return OpenDrive(name, roads, junctions, controllers)
