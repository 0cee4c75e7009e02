"""OpenDRIVE maps shipped with slimdrive and the server-side geometry of any OpenDRIVE map.

`available_maps()` lists the shipped maps, `load_xodr_text()` returns a map's OpenDRIVE text (what the
server sends to clients) and `load_network()` its parsed `RoadNetwork` (cached). See docs/maps.md.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from envs.maps.network import JunctionInfo, LaneGeometry, LaneHit, Pose, RoadNetwork, TrafficLight, TriggerVolume
from envs.maps.opendrive import MapError

XODR_DIR = Path(__file__).with_name("xodr")

__all__ = [
    "JunctionInfo", "LaneGeometry", "LaneHit", "MapError", "Pose", "RoadNetwork", "TrafficLight",
    "TriggerVolume", "available_maps", "load_network", "load_xodr_text",
]


def available_maps() -> list[str]:
    """Names of the shipped maps, sorted."""
    return sorted(p.stem for p in XODR_DIR.glob("*.xodr"))


def _resolve(name_or_path: str | Path) -> Path:
    name = str(name_or_path)
    if name in available_maps():
        return XODR_DIR / f"{name}.xodr"
    path = Path(name_or_path)
    if path.suffix == ".xodr" and path.is_file():
        return path.resolve()
    raise MapError(f"unknown map {name!r}: expected one of {', '.join(available_maps())} "
                   "or the path of an existing .xodr file")


def load_xodr_text(name_or_path: str | Path) -> str:
    """OpenDRIVE text of a shipped map (by name) or of a .xodr file (by path)."""
    return _resolve(name_or_path).read_text(encoding="utf-8")


def load_network(name_or_path: str | Path) -> RoadNetwork:
    """Parsed road network of a shipped map or .xodr file; parsed once per file and then shared."""
    path = _resolve(name_or_path)
    return _load_cached(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> RoadNetwork:
    p = Path(path)
    name = p.stem if p.parent == XODR_DIR else path
    return RoadNetwork.from_xodr(p.read_text(encoding="utf-8"), name)
