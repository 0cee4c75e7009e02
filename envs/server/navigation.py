"""Walker navigation: the map's walkable surfaces as a Recast/Detour navigation mesh, in the binary layout that
CARLA 0.9.16's client loads.

In CARLA, walker navigation runs inside the client (LibCarla `carla/nav/Navigation.cpp`, `WalkerManager.cpp`,
`client/detail/WalkerNavigation.cpp`): the client asks the server for the map's navigation file
(`get_required_files("Nav")`, then `request_file(name)` for the bytes, which it keeps in its file cache under
that name; newer clients call `get_navigation_mesh`), loads it with Detour, draws random locations and plans
paths itself, moves the walkers with a Detour crowd and sends their poses every tick as `ApplyWalkerState`
batch commands. This module builds that file from the map.

The layout, written here from the documented structures (no code copied):

* `Navigation::Load` reads a packed set header: `int magic ('MSET')`, `int version (1)`, `int numTiles`,
  `dtNavMeshParams {float orig[3]; float tileWidth, tileHeight; int maxTiles, maxPolys}`, then per tile a
  packed `{dtTileRef tileRef; int dataSize}` and `dataSize` bytes of tile data. The 0.9.16 client's Detour
  uses 32-bit references (`dtNavMesh::addTile(unsigned char*, int, int, unsigned int, unsigned int*)`).
* A tile (recastnavigation `Detour/Include/DetourNavMesh.h`, the layout `dtCreateNavMeshData` in
  `DetourNavMeshBuilder.cpp` writes and `dtNavMesh::addTile` reads, each part padded to 4 bytes (`dtAlign4`)):
  `dtMeshHeader` (magic 'DNAV', version 7, counts, agent sizes, bounds, BV quantisation factor), vertices
  (float x, y-up, z), `dtPoly` (first link, 6 vertex indices, 6 neighbours: index + 1 inside the tile, 0 for a
  wall; flags; vertex count; area in the low 6 bits, type 0 = ground), room for `dtLink`s (Detour builds them
  on load), `dtPolyDetail` per polygon, detail vertices (none here), detail triangles (a fan per polygon, with
  the boundary-edge flags), the BV tree (`dtBVNode`: quantised bounds, leaf = polygon index, inner node =
  minus its subtree's node count) and no off-mesh connections.
* Detour's frame is CARLA's with the up axis second: a location (x, y, z) is (x, z, y) there
  (`Navigation.cpp` swaps them both ways). Polygons wind so that Detour's `dtTriArea2D` is positive, as
  Recast's do (`findRandomPoint` weighs polygons by that area).
* Areas and flags are CARLA's (`carla/nav/Navigation.h`): area 1 sidewalk (flag 0x02), 2 crosswalk (0x04),
  3 road (0x08), 4 grass (0x10). `get_random_location_from_navigation` draws on sidewalks only; walkers walk
  sidewalks and crosswalks, and roads only if the cross factor lets them (roads cost 10x).

The mesh is a grid of square cells over the map's lanes: sidewalk lanes are sidewalk, the other lanes road, the
road cells within `CROSSWALK_DEPTH` of a junction crosswalk (the shipped maps have no crosswalk records, so every
junction arm gets a crossing at its mouth), and the cells of a junction's bounds that no lane covers (the corners
where the sidewalks of two arms meet) sidewalk, so that a walker can go round a block. A cell is what the lane
under its centre is, so the mesh follows the lanes' borders to within half a cell (0.5 m). Each cell is a quad
polygon sharing whole edges with its neighbours, as Detour's internal links need. The world is flat at z = 0
(docs/server.md), and so is the mesh. A map without sidewalks has no mesh.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("slimdrive.server")
AREA_SIDEWALK, AREA_CROSSWALK, AREA_ROAD, AREA_GRASS = 1, 2, 3, 4
FLAG_OF_AREA = {AREA_SIDEWALK: 0x02, AREA_CROSSWALK: 0x04, AREA_ROAD: 0x08, AREA_GRASS: 0x10}
ROAD_LANE_TYPES = {"driving", "parking", "shoulder", "bidirectional", "biking", "stop", "entry", "exit",
                   "onRamp", "offRamp", "restricted"}
CROSSWALK_DEPTH = 3.0  # m of each junction arm, from the junction's edge, that is a crossing
MAX_CELLS = 60_000  # one tile: Detour's vertex indices are 16-bit
WALKER_HEIGHT, WALKER_RADIUS, WALKER_CLIMB = 1.8, 0.3, 0.5  # Navigation.cpp's agent (and RecastBuilder's)

SET_MAGIC = ord("M") << 24 | ord("S") << 16 | ord("E") << 8 | ord("T")
SET_VERSION = 1
TILE_MAGIC = ord("D") << 24 | ord("N") << 16 | ord("A") << 8 | ord("V")
TILE_VERSION = 7
MESH_HEADER = struct.Struct("<15i3f3f3ff")  # dtMeshHeader: 100 bytes
POLY = np.dtype([("first_link", "<u4"), ("verts", "<u2", 6), ("neis", "<u2", 6), ("flags", "<u2"),
                 ("vert_count", "u1"), ("area_and_type", "u1")])  # dtPoly: 32 bytes
LINK_BYTES = 12  # dtLink: ref, next, edge, side, bmin, bmax
POLY_DETAIL = np.dtype([("vert_base", "<u4"), ("tri_base", "<u4"), ("vert_count", "u1"), ("tri_count", "u1"),
                        ("pad", "u1", 2)])  # dtPolyDetail: 12 bytes (10 and padding)
BV_NODE = np.dtype([("bmin", "<u2", 3), ("bmax", "<u2", 3), ("i", "<i4")])  # dtBVNode: 16 bytes
DETAIL_EDGE_BOUNDARY = 0x01


def _align4(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True)
class WalkableGrid:
    """Cells of `cell` metres from (x0, y0) in CARLA's world frame: `area[j, i]` for the cell at
    x in [x0 + i*cell, x0 + (i+1)*cell), y in [y0 + j*cell, ...); 0 where nothing is walkable."""

    x0: float
    y0: float
    cell: float
    area: np.ndarray  # (ny, nx) uint8

    def area_at(self, x: float, y: float) -> int:
        i, j = math.floor((x - self.x0) / self.cell), math.floor((y - self.y0) / self.cell)
        if 0 <= j < self.area.shape[0] and 0 <= i < self.area.shape[1]:
            return int(self.area[j, i])
        return 0


def _paint_quads(area: np.ndarray, x0: float, y0: float, cell: float, quads: np.ndarray, value: int,
                 where=None, chunk: int = 8) -> None:
    """Paint `value` into the cells whose centres lie inside any of `quads` (K, 4, 2) (convex, either winding),
    where `where(old)` allows; `chunk` quads at a time over the cells of their joint bounds."""
    ny, nx = area.shape
    for start in range(0, len(quads), chunk):
        group = quads[start:start + chunk]
        lo, hi = group.reshape(-1, 2).min(axis=0), group.reshape(-1, 2).max(axis=0)
        i0, i1 = max(int(math.floor((lo[0] - x0) / cell - 0.5)), 0), min(int(math.ceil((hi[0] - x0) / cell)), nx)
        j0, j1 = max(int(math.floor((lo[1] - y0) / cell - 0.5)), 0), min(int(math.ceil((hi[1] - y0) / cell)), ny)
        if i0 >= i1 or j0 >= j1:
            continue
        px, py = np.meshgrid(x0 + (np.arange(i0, i1) + 0.5) * cell, y0 + (np.arange(j0, j1) + 0.5) * cell)
        a = group[:, :, None, None, :]  # (Q, 4, 1, 1, 2)
        b = np.roll(group, -1, axis=1)[:, :, None, None, :]
        sides = (b[..., 0] - a[..., 0]) * (py - a[..., 1]) - (b[..., 1] - a[..., 1]) * (px - a[..., 0])  # (Q,4,h,w)
        inside = (np.all(sides >= -1e-9, axis=1) | np.all(sides <= 1e-9, axis=1)).any(axis=0)
        block = area[j0:j1, i0:i1]
        if where is not None:
            inside &= where(block)
        block[inside] = value


def _distance_to_convex(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance from each point (N, 2) to a convex polygon (M, 2), 0 inside."""
    best = np.full(len(points), np.inf)
    inside = np.ones(len(points), dtype=bool)
    orientation = np.sign(np.sum(polygon[:, 0] * np.roll(polygon[:, 1], -1) - np.roll(polygon[:, 0], -1)
                                 * polygon[:, 1])) or 1.0
    for k in range(len(polygon)):
        a, b = polygon[k], polygon[(k + 1) % len(polygon)]
        ab = b - a
        ap = points - a
        t = np.clip((ap @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(ap - t[:, None] * ab, axis=1))
        inside &= orientation * (ab[0] * ap[:, 1] - ab[1] * ap[:, 0]) >= 0
    return np.where(inside, 0.0, best)


class VertexOverflow(ValueError):
    """More cell corners than a Detour tile's 16-bit vertex indices reach."""


def walkable_grid(network, cell: float = 1.0, estimate: bool = True) -> WalkableGrid | None:
    """Rasterise the map's lanes into walkable areas; None when the map has no sidewalk. `estimate`: coarsen
    `cell` first by the lanes' area so that one tile may hold the mesh."""
    lanes = network.lanes()
    if not any(lane.lane_type == "sidewalk" for lane in lanes):
        return None
    points = np.concatenate([np.concatenate([lane.inner[:, :2], lane.outer[:, :2]]) for lane in lanes])
    lo, hi = points.min(axis=0) - cell, points.max(axis=0) + cell
    cells = np.prod(np.ceil((hi - lo) / cell))
    covered = sum(float(np.sum(np.linalg.norm(np.diff(lane.center[:, :2], axis=0), axis=1))
                        * np.mean(np.linalg.norm(lane.outer[:, :2] - lane.inner[:, :2], axis=1))) for lane in lanes)
    while estimate and covered / cell ** 2 * 1.5 > MAX_CELLS and cells > MAX_CELLS:  # one tile's 16-bit vertices
        cell *= 1.25
        cells = np.prod(np.ceil((hi - lo) / cell))
    nx, ny = (int(v) for v in np.ceil((hi - lo) / cell))
    x0, y0 = float(lo[0]), float(lo[1])
    area = np.zeros((ny, nx), dtype=np.uint8)

    def quads(lane) -> np.ndarray:
        a, b = lane.inner[:, :2], lane.outer[:, :2]
        return np.stack([a[:-1], a[1:], b[1:], b[:-1]], axis=1)

    junctions = [np.array(j.polygon, dtype=float) for j in network.junctions() if len(j.polygon) >= 3]
    for lane in lanes:
        if lane.lane_type in ROAD_LANE_TYPES:
            _paint_quads(area, x0, y0, cell, quads(lane), AREA_ROAD, where=lambda old: old == 0)
    for lane in lanes:
        if lane.lane_type == "sidewalk":
            _paint_quads(area, x0, y0, cell, quads(lane), AREA_SIDEWALK)
    centres = np.stack(np.meshgrid(x0 + (np.arange(nx) + 0.5) * cell, y0 + (np.arange(ny) + 0.5) * cell), -1)
    for polygon in junctions:
        jlo, jhi = polygon.min(axis=0) - CROSSWALK_DEPTH, polygon.max(axis=0) + CROSSWALK_DEPTH
        i0, i1 = max(int((jlo[0] - x0) / cell), 0), min(int(math.ceil((jhi[0] - x0) / cell)), nx)
        j0, j1 = max(int((jlo[1] - y0) / cell), 0), min(int(math.ceil((jhi[1] - y0) / cell)), ny)
        block = area[j0:j1, i0:i1]
        near = _distance_to_convex(centres[j0:j1, i0:i1].reshape(-1, 2), polygon).reshape(block.shape)
        # the mouth of each arm: road cells outside the junction, within CROSSWALK_DEPTH of its edge
        block[(block == AREA_ROAD) & (near > 0) & (near <= CROSSWALK_DEPTH)] = AREA_CROSSWALK
        # the corners of the junction's bounds that no lane covers: where the sidewalks of two arms meet
        x_of = x0 + (np.arange(i0, i1) + 0.5) * cell
        y_of = y0 + (np.arange(j0, j1) + 0.5) * cell
        inner = ((x_of >= polygon[:, 0].min()) & (x_of <= polygon[:, 0].max()))[None, :] & \
            ((y_of >= polygon[:, 1].min()) & (y_of <= polygon[:, 1].max()))[:, None]
        block[(block == 0) & inner] = AREA_SIDEWALK
    # cells inside junctions stay road: a crossing is at an arm's mouth
    return WalkableGrid(x0, y0, cell, area)


def _bv_tree(bmin: np.ndarray, bmax: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Detour's bounding-volume tree over polygon bounds (N, 3) quantised: nodes in depth-first order, a leaf's
    `i` its polygon, an inner node's `i` minus the number of nodes in its subtree (the escape jump). The polygons
    are split in halves of their order along `key` (a Z-order of grid cells keeps each half compact)."""
    order = np.argsort(key, kind="stable").tolist()
    n = len(order)
    nodes = np.zeros(max(2 * n - 1, 0), dtype=BV_NODE)
    lo_list, hi_list = bmin.tolist(), bmax.tolist()
    index_of, lo_of, hi_of = [0] * len(nodes), [None] * len(nodes), [None] * len(nodes)
    count = 0
    stack = [(0, n, None)] if n else []  # iterative pre-order: (range start, end, parent slot)
    parents = []
    while stack:
        a, b, parent = stack.pop()
        me = count
        count += 1
        parents.append(parent)
        if b - a == 1:
            index_of[me] = order[a]
            lo_of[me], hi_of[me] = lo_list[order[a]], hi_list[order[a]]
            continue
        half = (a + b) // 2
        stack.append((half, b, me))  # popped second: the left half's subtree comes first, as pre-order wants
        stack.append((a, half, me))
    # bounds and escape counts bottom-up: children always come after their parent
    size = [1] * count
    for me in range(count - 1, 0, -1):
        parent = parents[me]
        size[parent] += size[me]
        lo, hi = lo_of[me], hi_of[me]
        if lo_of[parent] is None:
            lo_of[parent], hi_of[parent] = list(lo), list(hi)
        else:
            plo, phi = lo_of[parent], hi_of[parent]
            for k in range(3):
                plo[k] = min(plo[k], lo[k])
                phi[k] = max(phi[k], hi[k])
    for me in range(count):
        if lo_of[me] is not None and size[me] > 1:
            index_of[me] = -size[me]
    nodes["bmin"], nodes["bmax"], nodes["i"] = lo_of, hi_of, index_of
    return nodes


def _morton(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    key = np.zeros(len(i), dtype=np.int64)
    for bit in range(16):
        key |= ((i >> bit) & 1) << (2 * bit) | ((j >> bit) & 1) << (2 * bit + 1)
    return key


def navmesh_bytes(grid: WalkableGrid) -> bytes:
    """The grid as one Detour tile in CARLA's navigation-file layout (see the module docstring)."""
    area = grid.area
    ny, nx = area.shape
    jj, ii = np.nonzero(area)
    n_polys = len(ii)
    poly_index = np.full((ny, nx), -1, dtype=np.int64)
    poly_index[jj, ii] = np.arange(n_polys)
    # vertices: the corners of walkable cells, numbered once
    corner_used = np.zeros((ny + 1, nx + 1), dtype=bool)
    for dj in (0, 1):
        for di in (0, 1):
            corner_used[jj + dj, ii + di] = True
    vj, vi = np.nonzero(corner_used)
    vert_index = np.full((ny + 1, nx + 1), -1, dtype=np.int64)
    vert_index[vj, vi] = np.arange(len(vi))
    if len(vi) > 0xFFFF:
        raise VertexOverflow(f"navigation mesh: {len(vi)} vertices do not fit one Detour tile")
    verts = np.zeros((len(vi), 3), dtype="<f4")
    verts[:, 0] = grid.x0 + vi * grid.cell
    verts[:, 2] = grid.y0 + vj * grid.cell  # Detour (x, up, z) = CARLA (x, z, y)
    # A cell's corners in the order that makes dtTriArea2D positive (clockwise in Detour's x-z plane):
    # (x0, z0) -> (x0, z1) -> (x1, z1) -> (x1, z0); edge k runs from corner k to corner k+1.
    corners = [(0, 0), (1, 0), (1, 1), (0, 1)]  # (dj, di)
    neighbour = [(0, -1), (1, 0), (0, 1), (-1, 0)]  # the cell across edge k: -x, +z, +x, -z
    polys = np.zeros(n_polys, dtype=POLY)
    for k, (dj, di) in enumerate(corners):
        polys["verts"][:, k] = vert_index[jj + dj, ii + di]
    links = 0
    for k, (dj, di) in enumerate(neighbour):
        nj, ni = jj + dj, ii + di
        ok = (nj >= 0) & (nj < ny) & (ni >= 0) & (ni < nx)
        other = np.full(n_polys, -1, dtype=np.int64)
        other[ok] = poly_index[nj[ok], ni[ok]]
        polys["neis"][:, k] = np.where(other >= 0, other + 1, 0)
        links += int(np.sum(other >= 0))
    polys["first_link"] = 0xFFFFFFFF
    cell_area = area[jj, ii]
    polys["flags"] = np.vectorize(FLAG_OF_AREA.get)(cell_area) if n_polys else 0
    polys["vert_count"] = 4
    polys["area_and_type"] = cell_area & 0x3F  # type 0: ground
    # detail mesh: each quad as a fan of two triangles over its own vertices, edges flagged on the boundary
    detail = np.zeros(n_polys, dtype=POLY_DETAIL)
    detail["tri_base"] = np.arange(n_polys) * 2
    detail["tri_count"] = 2
    boundary = DETAIL_EDGE_BOUNDARY
    tri_flags = [boundary << 0 | boundary << 2, boundary << 2 | boundary << 4]  # (0,1,2): edges 0-1, 1-2; (0,2,3)
    tris = np.tile(np.array([[0, 1, 2, tri_flags[0]], [0, 2, 3, tri_flags[1]]], dtype=np.uint8), (n_polys, 1))
    # BV tree, quantised from the tile's minimum
    bmin_world = np.array([grid.x0, -0.1, grid.y0], dtype=float)
    extent = max(nx, ny) * grid.cell
    quant = min(8.0 / grid.cell, 60000.0 / max(extent, 1.0))
    cell_lo = np.stack([ii * grid.cell, np.zeros(n_polys) + 0.1, jj * grid.cell], axis=1)
    q_lo = np.floor(cell_lo * quant).astype(np.uint16)
    q_hi = np.ceil((cell_lo + np.array([grid.cell, 0.0, grid.cell])) * quant).astype(np.uint16)
    bv = _bv_tree(q_lo, q_hi, _morton(ii.astype(np.int64), jj.astype(np.int64)))
    bmax_world = np.array([grid.x0 + nx * grid.cell, 0.1, grid.y0 + ny * grid.cell])
    max_links = max(links, 1)
    header = MESH_HEADER.pack(
        TILE_MAGIC, TILE_VERSION, 0, 0, 0, 0,  # magic, version, tile x, y, layer, user id
        n_polys, len(verts), max_links, n_polys, 0, len(tris), len(bv), 0, n_polys,  # counts, offMeshBase
        WALKER_HEIGHT, WALKER_RADIUS, WALKER_CLIMB, *bmin_world, *bmax_world, quant)
    parts = [header, verts.tobytes(), polys.tobytes(), bytes(LINK_BYTES * max_links), detail.tobytes(), b"",
             tris.tobytes(), bv.tobytes(), b""]
    tile = b"".join(part + bytes(_align4(len(part)) - len(part)) for part in parts)
    poly_bits = max(1, math.ceil(math.log2(max(n_polys, 2))))
    params = struct.pack("<3f2f2i", *bmin_world, nx * grid.cell + 1.0, ny * grid.cell + 1.0, 1, 1 << poly_bits)
    tile_ref = 1 << poly_bits  # salt 1, tile 0, polygon 0
    return struct.pack("<3i", SET_MAGIC, SET_VERSION, 1) + params + struct.pack("<Ii", tile_ref, len(tile)) + tile


# The builder's own source: part of a mesh's file name, so that a changed builder never meets a stale cache
_BUILDER = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()
DISK_CACHE = Path(tempfile.gettempdir()) / f"slimdrive-navmesh-{os.getuid() if hasattr(os, 'getuid') else 0}"
MESHES_ON_DISK = 16  # the disk cache keeps the most recently used; every change of this file names each mesh anew
STALE_PART_S = 600.0  # a partial file this old is a killed server's, removed


def has_sidewalks(network) -> bool:
    return any(lane.type == "sidewalk" for road in network.odr.roads.values() for section in road.sections
               for lane in section.lanes.values())


def file_name(xodr: str) -> str:
    """The name under which the client caches a map's mesh (CARLA 0.9.16 keeps required files by name and asks
    for one only when it lacks it): a hash of the map's OpenDRIVE text and of this builder, so it is known before
    the mesh is built, and a changed map or builder never reads a stale file."""
    return f"slimdrive/Nav/{hashlib.sha1((xodr + _BUILDER).encode()).hexdigest()[:20]}.bin"


_CACHE: dict[str, tuple[threading.Event, list]] = {}  # file name -> (built, [bytes or None]), least recent first
_CACHE_LOCK = threading.Lock()
MESHES_IN_MEMORY = 4  # built meshes a process keeps (4.5 MB for town); older ones are read again from the disk cache


def file_problem(data: bytes) -> str | None:
    """What is wrong with a navigation file's bytes as `navmesh_bytes` writes them (one tile, no off-mesh
    connections), None when nothing is: the magics and versions, and the lengths its headers give against the
    bytes there are, so that a truncated or padded file is never served (the client's Detour would read past it)."""
    set_header = struct.calcsize("<3i") + struct.calcsize("<3f2f2i") + struct.calcsize("<Ii")
    if len(data) < set_header + MESH_HEADER.size:
        return f"{len(data)} bytes, shorter than the headers ({set_header + MESH_HEADER.size})"
    magic, version, tiles = struct.unpack_from("<3i", data)
    if (magic, version, tiles) != (SET_MAGIC, SET_VERSION, 1):
        return f"set header (magic, version, tiles) = {(magic, version, tiles)}, not ({SET_MAGIC}, {SET_VERSION}, 1)"
    size = struct.unpack_from("<i", data, set_header - 4)[0]
    if size != len(data) - set_header:
        return f"tile of {size} bytes, {len(data) - set_header} there"
    header = MESH_HEADER.unpack_from(data, set_header)
    if header[:2] != (TILE_MAGIC, TILE_VERSION):
        return f"tile header (magic, version) = {header[:2]}, not ({TILE_MAGIC}, {TILE_VERSION})"
    polys, verts, links, details, detail_verts, tris, bv_nodes, off_mesh = header[6:14]
    parts = (MESH_HEADER.size, 12 * verts, POLY.itemsize * polys, LINK_BYTES * links, POLY_DETAIL.itemsize * details,
             12 * detail_verts, 4 * tris, BV_NODE.itemsize * bv_nodes)
    expected = sum(_align4(part) for part in parts)
    if off_mesh != 0 or min(header[6:14]) < 0 or expected != size:
        return f"tile counts {header[6:14]} make {expected} bytes with {off_mesh} off-mesh links, not {size}"
    return None


def _private_cache() -> bool:
    """Whether DISK_CACHE is a folder of this user's that no one else may write, made so if it is missing: it lies
    in the shared temp folder under a name anyone can guess, and what it holds goes to clients' Detour. A folder
    or link of another user's is neither read nor written (logged)."""
    try:
        DISK_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = DISK_CACHE.lstat()
        mine = stat.S_ISDIR(info.st_mode) and (not hasattr(os, "getuid") or info.st_uid == os.getuid())
        if mine and info.st_mode & 0o022:
            DISK_CACHE.chmod(0o700)
    except OSError as exc:
        log.warning("navigation mesh cache %s not usable: %s", DISK_CACHE, exc)
        return False
    if not mine:
        log.warning("navigation mesh cache %s is not a folder of this user's: not used", DISK_CACHE)
    return mine


def _build_bytes(network, name: str) -> bytes | None:
    """The mesh's bytes, from this machine's disk cache when a server built them before (a few milliseconds
    instead of about 1.5 s for `town`); a cached file that is not whole is logged, built again and replaced."""
    path = DISK_CACHE / Path(name).name
    private = _private_cache()
    try:
        cached = path.read_bytes() if private else None
    except OSError:
        cached = None
    if cached is not None:
        problem = file_problem(cached)
        if problem is None:
            _touch(path)
            return cached
        log.warning("navigation mesh cache %s is damaged (%s): building it again", path, problem)
    grid = walkable_grid(network)
    if grid is None:
        return None
    while True:
        try:
            data = navmesh_bytes(grid)
            break
        except VertexOverflow:  # the estimate of walkable_grid fell short: coarser cells until one tile holds it
            grid = walkable_grid(network, grid.cell * 1.25, estimate=False)
    if not private:
        return data
    try:
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(path)  # whole or not at all, for servers building side by side
        _prune()
    except OSError as exc:
        log.warning("navigation mesh not kept in %s: %s", DISK_CACHE, exc)
    return data


def _touch(path: Path) -> None:
    try:
        os.utime(path)  # recently used: kept by _prune
    except OSError:
        pass


def _prune() -> None:
    """Keep the MESHES_ON_DISK most recently used meshes of the disk cache, and no partial file of a server that
    was killed while writing (older than STALE_PART_S)."""
    def age(path: Path) -> float:
        try:
            return time.time() - path.stat().st_mtime
        except OSError:  # another server removed it meanwhile
            return math.inf

    meshes = sorted(DISK_CACHE.glob("*.bin"), key=age)
    stale = [p for p in DISK_CACHE.glob("*.part") if age(p) > STALE_PART_S]
    for path in meshes[MESHES_ON_DISK:] + stale:
        path.unlink(missing_ok=True)


def mesh_bytes(network, xodr: str, wait: bool = True) -> bytes | None:
    """The map's mesh (None on a map without sidewalks), built once per map and process (the newest
    MESHES_IN_MEMORY kept in memory); a second caller waits for the first's build. `wait=False` starts the build
    on a thread of its own and returns at once (None)."""
    if not has_sidewalks(network):
        return None
    name = file_name(xodr)
    with _CACHE_LOCK:
        entry = _CACHE.pop(name, None)
        mine = entry is None
        if mine:
            entry = (threading.Event(), [None])
        _CACHE[name] = entry  # the most recent, last
    built, slot = entry

    def run() -> None:
        try:
            slot[0] = _build_bytes(network, name)
        except Exception:  # the map then has no mesh, as one without sidewalks; the log says why
            log.exception("navigation mesh of the map could not be built")
        finally:
            built.set()
            # a server that loads map after map (generate_opendrive_world) keeps the newest few built meshes
            with _CACHE_LOCK:
                for old in [key for key, (done, _) in _CACHE.items() if done.is_set()][:-MESHES_IN_MEMORY]:
                    del _CACHE[old]

    if mine:
        if not wait:
            threading.Thread(target=run, name="navmesh", daemon=True).start()
            return None
        run()
    if not wait:
        return slot[0] if built.is_set() else None
    built.wait()
    return slot[0]
