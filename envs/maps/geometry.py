"""Plane curves and polynomials of OpenDRIVE, evaluated in the OpenDRIVE frame (x east, y north, right-handed).

Everything here is vectorised over numpy arrays of arc length. Nothing here knows about XML or CARLA's
left-handed world frame; `opendrive.py` does the flip.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

# Spirals have no closed form here (scipy is not a project dependency), so their heading is integrated on a
# table with this step; the midpoint rule makes the position error ~1e-6 m per metre, far below 5 cm.
_SPIRAL_STEP = 0.1


def wrap_angle(angle, half_turn: float = 180.0):
    """`angle` wrapped into [-half_turn, half_turn): degrees by default, radians with `half_turn=math.pi`.

    The one angle wrap of the project's map and simulator layers (and above them): floats stay floats,
    numpy arrays stay arrays."""
    return (angle + half_turn) % (2.0 * half_turn) - half_turn


@dataclass(frozen=True)
class Cubic:
    """a + b*ds + c*ds^2 + d*ds^3 with ds = s - s0."""

    s0: float
    a: float
    b: float = 0.0
    c: float = 0.0
    d: float = 0.0

    def value(self, s: np.ndarray) -> np.ndarray:
        ds = s - self.s0
        return self.a + ds * (self.b + ds * (self.c + ds * self.d))

    def slope(self, s: np.ndarray) -> np.ndarray:
        ds = s - self.s0
        return self.b + ds * (2.0 * self.c + ds * 3.0 * self.d)


@dataclass(frozen=True)
class PiecewiseCubic:
    """A sequence of cubics, each valid from its s0 to the next one's (OpenDRIVE's elevation, laneOffset, width).

    An empty sequence is the zero function, which is what OpenDRIVE means by an absent record.
    """

    pieces: tuple[Cubic, ...] = ()

    def at(self, s: float) -> float:
        """Scalar value without numpy overhead, for per-point queries."""
        if not self.pieces:
            return 0.0
        piece = self.pieces[max(0, bisect.bisect_right(self._starts, s) - 1)]
        ds = s - piece.s0
        return piece.a + ds * (piece.b + ds * (piece.c + ds * piece.d))

    @property
    def _starts(self) -> list[float]:
        return [p.s0 for p in self.pieces]

    def _index(self, s: np.ndarray) -> np.ndarray:
        starts = np.array([p.s0 for p in self.pieces])
        return np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(self.pieces) - 1)

    def _evaluate(self, s: np.ndarray | float, method: str) -> np.ndarray:
        """Evaluate each piece's `method` ("value" or "slope") on the s values that fall in it."""
        s = np.asarray(s, dtype=float)
        if not self.pieces:
            return np.zeros_like(s)
        idx = self._index(s)
        out = np.empty_like(s)
        for i, piece in enumerate(self.pieces):
            mask = idx == i
            out[mask] = getattr(piece, method)(s[mask])
        return out

    def value(self, s: np.ndarray | float) -> np.ndarray:
        return self._evaluate(s, "value")

    def slope(self, s: np.ndarray | float) -> np.ndarray:
        return self._evaluate(s, "slope")


@dataclass(frozen=True)
class Segment:
    """One planView <geometry>: starts at (x, y) with heading hdg at road arc length s0.

    Curvature goes linearly from curv_start to curv_end over the length: a line has both 0, an arc has
    both equal, a spiral (clothoid) has them different.
    """

    s0: float
    x: float
    y: float
    hdg: float
    length: float
    curv_start: float = 0.0
    curv_end: float = 0.0
    _table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def is_spiral(self) -> bool:
        return self.curv_start != self.curv_end

    def heading(self, u: np.ndarray) -> np.ndarray:
        rate = (self.curv_end - self.curv_start) / self.length if self.length > 0 else 0.0
        return self.hdg + self.curv_start * u + 0.5 * rate * u * u

    def evaluate(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position and heading at local arc lengths u in [0, length]."""
        u = np.clip(np.asarray(u, dtype=float), 0.0, self.length)
        if self.is_spiral:
            return self._evaluate_spiral(u)
        k = self.curv_start
        h = self.hdg + k * u
        if abs(k) < 1e-12:
            return self.x + u * np.cos(self.hdg), self.y + u * np.sin(self.hdg), h
        return (
            self.x + (np.sin(h) - np.sin(self.hdg)) / k,
            self.y - (np.cos(h) - np.cos(self.hdg)) / k,
            h,
        )

    def _spiral_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._table is None:
            n = max(1, int(np.ceil(self.length / _SPIRAL_STEP)))
            nodes = np.linspace(0.0, self.length, n + 1)
            mid = self.heading(0.5 * (nodes[:-1] + nodes[1:]))
            step = np.diff(nodes)
            xs = np.concatenate([[self.x], self.x + np.cumsum(step * np.cos(mid))])
            ys = np.concatenate([[self.y], self.y + np.cumsum(step * np.sin(mid))])
            object.__setattr__(self, "_table", (nodes, xs, ys))
        return self._table  # type: ignore[return-value]

    def _evaluate_spiral(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nodes, xs, ys = self._spiral_table()
        i = np.clip(np.searchsorted(nodes, u, side="right") - 1, 0, len(nodes) - 1)
        rest = u - nodes[i]
        mid = self.heading(nodes[i] + 0.5 * rest)
        return xs[i] + rest * np.cos(mid), ys[i] + rest * np.sin(mid), self.heading(u)


@dataclass(frozen=True)
class ReferenceLine:
    """The chained planView segments of one road."""

    segments: tuple[Segment, ...]

    @property
    def length(self) -> float:
        last = self.segments[-1]
        return last.s0 + last.length

    def evaluate(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) in the OpenDRIVE frame at road arc lengths s (clamped to the road)."""
        s = np.atleast_1d(np.asarray(s, dtype=float))
        starts = np.array([g.s0 for g in self.segments])
        idx = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(self.segments) - 1)
        x, y, h = np.empty_like(s), np.empty_like(s), np.empty_like(s)
        for i, seg in enumerate(self.segments):
            mask = idx == i
            if mask.any():
                x[mask], y[mask], h[mask] = seg.evaluate(s[mask] - seg.s0)
        return x, y, h


def end_pose(segment: Segment) -> tuple[float, float, float]:
    """(x, y, heading) at the end of a segment; the generator chains segments with it."""
    x, y, h = segment.evaluate(np.array([segment.length]))
    return float(x[0]), float(y[0]), float(h[0])
