"""A map's static scene, built once per road network: the ground texture and the scenery boxes.

The ground (roads, lane markings, kerbs, sidewalks, crosswalks, stop lines, grass) is painted into a
top-down texture of `RESOLUTION` m per texel from `network.lanes()` and `network.junctions()`; cameras see it
through a homography, so the flat ground costs one `cv2.warpPerspective` per image. Buildings, trees and
street lamps are placed procedurally along the roads with a generator seeded by the map name, so a map
always looks the same. Traffic-light poles stand here too; only their lamps change per tick (see
`renderer.dynamic_boxes`).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from ..blueprints import TAG
from .boxes import TOP, BoxBuilder, BoxSet

RESOLUTION = 0.1  # m per ground texel: lane lines (0.15 m) stay at least one texel wide
MARGIN = 60.0  # m of grass drawn around the road network

ASPHALT, SIDEWALK, KERB, GRASS = (78, 78, 82), (160, 156, 148), (200, 198, 190), (86, 112, 58)
WHITE, YELLOW = (235, 235, 230), (225, 185, 40)
FACADES = ((176, 92, 70), (205, 190, 160), (150, 150, 155), (230, 225, 215), (120, 95, 80), (190, 160, 120),
           (110, 120, 135), (215, 205, 185))
ROOF, TRUNK, LEAVES = (70, 70, 72), (90, 65, 40), ((60, 110, 45), (75, 125, 50), (50, 95, 40))
POLE, LAMP = (95, 100, 105), (255, 240, 200)
PAVED = {"driving", "shoulder", "parking", "biking", "stop", "entry", "exit", "onRamp", "offRamp", "bidirectional"}
DASH_ON, DASH_PERIOD = 3.0, 9.0  # m: broken lines are 3 m painted, 6 m gap
CROSSWALK_LENGTH, CROSSWALK_SETBACK = 3.0, 0.5  # m along the lane, m back from the junction edge


@dataclass
class Ground:
    bgr: np.ndarray  # (H, W, 3) uint8 (once painted: a view into `bgra`)
    tag: np.ndarray  # (H, W) uint8 semantic ids
    x0: float  # world x of texel column 0's left edge
    y0: float  # world y of texel row 0's top edge
    resolution: float
    bgra: np.ndarray | None = None  # (H, W, 4) uint8, alpha 255: what cameras sample (4 channels warp 2x faster)

    def finish(self) -> None:
        """Freeze the painted texture as BGRA (the 3-channel array becomes a view of it)."""
        self.bgra = cv2.cvtColor(self.bgr, cv2.COLOR_BGR2BGRA)
        self.bgr = self.bgra[..., :3]

    def texel_matrix(self) -> np.ndarray:
        """World (x, y, 1) -> texel (column, row, 1), texel centres at integers."""
        r = self.resolution
        return np.array([[1 / r, 0, -self.x0 / r - 0.5], [0, 1 / r, -self.y0 / r - 0.5], [0, 0, 1.0]])


@dataclass
class LightPost:
    """Where a traffic light's lamps hang and which way they face (yaw of the traffic they control + 180)."""

    head: np.ndarray  # (3,) world position of the lamp housing's centre
    facing_yaw: float


@dataclass
class StaticScene:
    ground: Ground
    boxes: BoxSet
    lights: dict[str, LightPost]  # by OpenDRIVE signal id


def _px(points: np.ndarray, x0: float, y0: float, res: float, shift: int = 3) -> np.ndarray:
    return np.round((points[:, :2] - (x0, y0)) / res * (1 << shift)).astype(np.int32)


def _normals(line: np.ndarray) -> np.ndarray:
    tangent = np.gradient(line[:, :2], axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
    return np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)


class _Painter:
    """Draws world-space polygons and lines into the ground colour and tag rasters."""

    def __init__(self, ground: Ground):
        self.g = ground

    def polygon(self, points: np.ndarray, rgb, tag: int) -> None:
        px = [_px(points, self.g.x0, self.g.y0, self.g.resolution)]
        cv2.fillPoly(self.g.bgr, px, rgb[::-1], cv2.LINE_AA, shift=3)
        cv2.fillPoly(self.g.tag, px, tag, shift=3)

    def line(self, points: np.ndarray, width: float, rgb, tag: int) -> None:
        px = [_px(points, self.g.x0, self.g.y0, self.g.resolution)]
        thickness = max(1, int(round(width / self.g.resolution)))
        cv2.polylines(self.g.bgr, px, False, rgb[::-1], thickness, cv2.LINE_AA, shift=3)
        cv2.polylines(self.g.tag, px, False, tag, thickness, shift=3)

    def rectangle(self, center, along, half_length: float, half_width: float, rgb, tag: int) -> None:
        side = np.array([-along[1], along[0]])
        corners = np.array([center + sa * half_length * along + sb * half_width * side
                            for sa, sb in ((1, 1), (1, -1), (-1, -1), (-1, 1))])
        self.polygon(corners, rgb, tag)

    def mark(self, border: np.ndarray, kind: str, rgb) -> None:
        """An OpenDRIVE roadMark type on a lane border: solid, broken, or two of them side by side."""
        parts = [p for p in kind.split() if p in ("solid", "broken")]
        offsets = (0.0,) if len(parts) == 1 else (-0.12, 0.12)
        normals = _normals(border)
        for part, offset in zip(parts, offsets):
            line = border[:, :2] + offset * normals
            if part == "solid":
                self.line(line, 0.15, rgb, TAG["road_line"])
                continue
            for dash in _dashes(line):
                self.line(dash, 0.15, rgb, TAG["road_line"])


def _dashes(line: np.ndarray) -> list[np.ndarray]:
    """Pieces of a polyline painted by a broken line (resampled every 0.25 m)."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] < DASH_ON:
        return []
    fine = np.arange(0.0, s[-1], 0.25)
    pts = np.stack([np.interp(fine, s, line[:, 0]), np.interp(fine, s, line[:, 1])], axis=1)
    on = (fine % DASH_PERIOD) < DASH_ON
    out, start = [], None
    for i, flag in enumerate(np.append(on, False)):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= 2:
                out.append(pts[start:i])
            start = None
    return out


def _paint_ground(lanes, junctions, rng: np.random.Generator) -> Ground:
    all_pts = np.concatenate([ln.outer[:, :2] for ln in lanes] + [ln.inner[:, :2] for ln in lanes])
    lo, hi = all_pts.min(axis=0) - MARGIN, all_pts.max(axis=0) + MARGIN
    size = np.ceil((hi - lo) / RESOLUTION).astype(int)
    # Grass with a low-frequency tint so that the ground is not a flat colour (helps depth perception).
    coarse = rng.normal(0.0, 1.0, (size[1] // 40 + 2, size[0] // 40 + 2)).astype(np.float32)
    tint = cv2.resize(coarse, (int(size[0]), int(size[1])), interpolation=cv2.INTER_CUBIC)[..., None]
    bgr = np.clip(np.array(GRASS[::-1], np.float32) * (1.0 + 0.12 * tint), 0, 255).astype(np.uint8)
    ground = Ground(bgr, np.full((size[1], size[0]), TAG["terrain"], np.uint8), float(lo[0]), float(lo[1]), RESOLUTION)
    paint = _Painter(ground)
    polygon = lambda ln: np.concatenate([ln.inner, ln.outer[::-1]])  # noqa: E731
    for ln in lanes:
        if ln.lane_type not in PAVED:
            paint.polygon(polygon(ln), SIDEWALK, TAG["sidewalk"])
    for j in junctions:
        if len(j.polygon) >= 3:
            paint.polygon(np.array(j.polygon), ASPHALT, TAG["road"])
    for ln in lanes:
        if ln.lane_type in PAVED:
            paint.polygon(polygon(ln), ASPHALT, TAG["road"])
    for ln in lanes:
        if ln.lane_type == "sidewalk":  # kerb stone along the road side of the sidewalk
            paint.line(ln.inner, 0.3, KERB, TAG["sidewalk"])
    for ln in lanes:
        if ln.junction_id != -1:
            continue  # CARLA paints no lines inside junctions
        if ln.lane_type in PAVED and ln.outer_mark != "none":
            paint.mark(ln.outer, ln.outer_mark, WHITE)
        if abs(ln.lane_id) == 1 and ln.inner_mark != "none" and (ln.lane_id < 0 or not _has_lane(lanes, ln, -1)):
            paint.mark(ln.inner, ln.inner_mark, YELLOW)
    _paint_crossings(paint, lanes, junctions)
    ground.finish()
    return ground


def _has_lane(lanes, ln, lane_id: int) -> bool:
    return any(o.road_id == ln.road_id and o.section_index == ln.section_index and o.lane_id == lane_id for o in lanes)


def _paint_crossings(paint: _Painter, lanes, junctions) -> None:
    """Zebra crossings across every paved lane where it meets a junction, stop lines on entering lanes."""
    hulls = [np.array(j.polygon, np.float32) for j in junctions if len(j.polygon) >= 3]
    for ln in lanes:
        if ln.junction_id != -1 or ln.lane_type not in PAVED or len(ln.center) < 4:
            continue
        for end, before in ((-1, -4), (0, 3)):
            tip = ln.center[end, :2]
            if not any(cv2.pointPolygonTest(h, (float(tip[0]), float(tip[1])), True) > -1.5 for h in hulls):
                continue
            along = tip - ln.center[before, :2]
            along /= max(np.linalg.norm(along), 1e-9)
            side = np.array([-along[1], along[0]])
            width = float(np.linalg.norm(ln.outer[end, :2] - ln.inner[end, :2]))
            middle = tip - along * (CROSSWALK_SETBACK + 0.5 * CROSSWALK_LENGTH)
            for lateral in np.arange(-0.5 * width + 0.4, 0.5 * width - 0.2, 1.0):
                paint.rectangle(middle + side * lateral, along, 0.5 * CROSSWALK_LENGTH, 0.25, WHITE, TAG["road_line"])
            entering = (ln.lane_id < 0) == (end == -1)
            if ln.lane_type == "driving" and entering:
                stop = tip - along * (CROSSWALK_SETBACK + CROSSWALK_LENGTH + 0.6)
                paint.rectangle(stop, along, 0.2, 0.5 * width - 0.05, WHITE, TAG["road_line"])


class _Placer:
    """Keeps scenery off the roads and off each other, on a 0.5 m occupancy grid."""

    CELL = 0.5

    def __init__(self, ground: Ground):
        h, w = ground.tag.shape
        factor = int(round(self.CELL / ground.resolution))
        tag = cv2.resize(ground.tag, (w // factor, h // factor), interpolation=cv2.INTER_NEAREST)
        self.road = (tag != TAG["terrain"]).astype(np.uint8)
        self.used = cv2.dilate(self.road, np.ones((5, 5), np.uint8))  # 1 m clearance from any pavement
        self.x0, self.y0 = ground.x0, ground.y0

    def _cells(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        col = np.clip(((points[:, 0] - self.x0) / self.CELL).astype(int), 0, self.used.shape[1] - 1)
        row = np.clip(((points[:, 1] - self.y0) / self.CELL).astype(int), 0, self.used.shape[0] - 1)
        return row, col

    def free(self, center, along, half_length: float, half_width: float) -> bool:
        side = np.array([-along[1], along[0]])
        a, b = np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 7))
        pts = center + a.reshape(-1, 1) * half_length * along + b.reshape(-1, 1) * half_width * side
        row, col = self._cells(pts)
        return not self.used[row, col].any()

    def take(self, center, along, half_length: float, half_width: float) -> None:
        side = np.array([-along[1], along[0]])
        corners = np.array([center + sa * (half_length + 0.5) * along + sb * (half_width + 0.5) * side
                            for sa, sb in ((1, 1), (1, -1), (-1, -1), (-1, 1))])
        px = np.round((corners - (self.x0, self.y0)) / self.CELL).astype(np.int32)
        cv2.fillConvexPoly(self.used, px, 1)


def _outer_borders(lanes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(border polyline, outward unit normals) of the outermost lane on each side of every road section."""
    outermost: dict[tuple[int, int, int], object] = {}
    for ln in lanes:
        if ln.junction_id != -1:
            continue
        key = (ln.road_id, ln.section_index, 1 if ln.lane_id > 0 else -1)
        if key not in outermost or abs(ln.lane_id) > abs(outermost[key].lane_id):
            outermost[key] = ln
    out = []
    for key in sorted(outermost):
        ln = outermost[key]
        outward = ln.outer[:, :2] - ln.inner[:, :2]
        outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-9)
        out.append((ln.outer[:, :2], outward))
    return out


def _along(border: np.ndarray, spacing_rng, rng: np.random.Generator):
    """Yield (index, point, unit tangent) at random spacings along a polyline."""
    seg = np.linalg.norm(np.diff(border, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    pos = rng.uniform(0, spacing_rng[0])
    while pos < s[-1]:
        i = min(int(np.searchsorted(s, pos)), len(border) - 1)
        tangent = border[min(i + 1, len(border) - 1)] - border[max(i - 1, 0)]
        tangent /= max(np.linalg.norm(tangent), 1e-9)
        yield i, np.array([np.interp(pos, s, border[:, 0]), np.interp(pos, s, border[:, 1])]), tangent
        pos += rng.uniform(*spacing_rng)


def _scenery(ground: Ground, lanes, rng: np.random.Generator) -> BoxSet:
    placer = _Placer(ground)
    b = BoxBuilder()
    borders = _outer_borders(lanes)
    for border, outward in borders:  # lamps and trees first: they stand close to the kerb
        for i, p, tangent in _along(border, (22.0, 30.0), rng):
            base = p + outward[i] * 0.6
            if placer.free(base, tangent, 0.3, 0.3):
                placer.take(base, tangent, 0.3, 0.3)
                _street_lamp(b, base, -outward[i])
        for i, p, tangent in _along(border, (8.0, 14.0), rng):
            base = p + outward[i] * rng.uniform(1.6, 2.6)
            if rng.random() < 0.8 and placer.free(base, tangent, 0.8, 0.8):
                placer.take(base, tangent, 0.8, 0.8)
                _tree(b, base, rng)
    for border, outward in borders:
        for i, p, tangent in _along(border, (12.0, 22.0), rng):
            half_len, half_depth = rng.uniform(4.0, 10.0), rng.uniform(4.0, 9.0)
            center = p + outward[i] * (rng.uniform(4.0, 7.0) + half_depth)
            if placer.free(center, tangent, half_len, half_depth):
                placer.take(center, tangent, half_len, half_depth)
                height = 5.0 + 25.0 * rng.random() ** 2
                yaw = float(np.degrees(np.arctan2(tangent[1], tangent[0])))
                b.add((*center, 0.5 * height), (half_len, half_depth, 0.5 * height),
                      FACADES[rng.integers(len(FACADES))], TAG["building"], yaw=yaw, faces={TOP: ROOF})
    return b.build()


def _tree(b: BoxBuilder, base: np.ndarray, rng: np.random.Generator) -> None:
    trunk = rng.uniform(2.0, 3.2)
    crown = rng.uniform(1.3, 2.1)
    leaves = LEAVES[rng.integers(len(LEAVES))]
    yaw = rng.uniform(0, 90)
    b.add((*base, 0.5 * trunk), (0.15, 0.15, 0.5 * trunk), TRUNK, TAG["vegetation"])
    b.add((*base, trunk + crown * 0.9), (crown, crown, crown * 0.9), leaves, TAG["vegetation"], yaw=yaw)
    b.add((*base, trunk + crown * 0.9), (crown * 0.8, crown * 0.8, crown * 1.05), leaves, TAG["vegetation"],
          yaw=yaw + 45.0)


def _street_lamp(b: BoxBuilder, base: np.ndarray, towards_road: np.ndarray) -> None:
    height = 7.0
    yaw = float(np.degrees(np.arctan2(towards_road[1], towards_road[0])))
    b.add((*base, 0.5 * height), (0.08, 0.08, 0.5 * height), POLE, TAG["pole"])
    arm = base + towards_road * 0.9
    b.add((*arm, height - 0.05), (0.9, 0.05, 0.05), POLE, TAG["pole"], yaw=yaw)
    head = base + towards_road * 1.7
    b.add((*head, height - 0.15), (0.3, 0.12, 0.08), LAMP, TAG["pole"], yaw=yaw, emissive=(5,))


def _light_posts(network, b: BoxBuilder) -> dict[str, LightPost]:
    """A pole at each signal, a mast arm over the controlled lanes and a lamp housing facing the traffic."""
    posts = {}
    for record in network.traffic_lights():
        pole = np.array([record.pose.x, record.pose.y])
        yaw = np.radians(record.stop_line.yaw)
        lateral = np.array([-np.sin(yaw), np.cos(yaw)])
        offset = float(np.dot(np.array([record.stop_line.x, record.stop_line.y]) - pole, lateral))
        head = pole + lateral * offset
        height = 5.6
        b.add((*pole, 0.5 * height), (0.12, 0.12, 0.5 * height), POLE, TAG["pole"])
        middle = 0.5 * (pole + head)
        arm_yaw = float(np.degrees(np.arctan2(lateral[1], lateral[0])))
        b.add((*middle, height - 0.1), (0.5 * abs(offset) + 0.1, 0.07, 0.07), POLE, TAG["pole"], yaw=arm_yaw)
        facing = record.stop_line.yaw + 180.0
        b.add((*head, height - 0.75), (0.15, 0.2, 0.55), (30, 32, 30), TAG["traffic_light"], yaw=facing)
        posts[record.id] = LightPost(np.array([*head, height - 0.75]), facing)
    return posts


def build_scene(network, name: str) -> StaticScene:
    """The static scene of a road network; deterministic for a given map name."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    lanes = network.lanes()
    junctions = network.junctions()
    ground = _paint_ground(lanes, junctions, rng)
    boxes = _scenery(ground, lanes, rng)
    poles = BoxBuilder()
    lights = _light_posts(network, poles)
    return StaticScene(ground, BoxSet.concat([boxes, poles.build()]), lights)
