"""Scores: CARLA Leaderboard 2.0 driving score, Bench2Drive success and comfort, minimum time-to-collision.

Leaderboard 2.0 (github.com/carla-simulator/leaderboard, branch leaderboard-2.0,
`leaderboard/utils/statistics_manager.py`):
    driving score = route completion (0-100) x infraction penalty
    penalty = prod(coefficient per infraction)       pedestrian 0.50, vehicle 0.60, static 0.65, red light
                                                     0.70, stop 0.80, scenario timeout 0.70, yield 0.70
              x (1 - outside_lanes_pct / 100)
              x prod over route quarters (1 - 0.3 (1 - min_speed_pct / 100))
    global score = mean over routes, a missing or crashed route counting 0.

`SCORING_VERSION` names these rules as slimdrive applies them, and `deviations` lists, for a run's results,
every rule in which they differ from the Leaderboard 2.0's (`slimdrive eval` writes both into results.json).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .criteria import PENALTY

# Revision 2: routes go on after a collision and collisions are deduplicated as the Leaderboard 2.0's
# CollisionTest does (revision 1, "leaderboard-2.0", ended the route at the first collision).
SCORING_VERSION = "leaderboard-2.0+slimdrive.2"
# Where slimdrive's criteria differ from the Leaderboard 2.0 (github.com/carla-simulator/leaderboard and
# scenario_runner, branch leaderboard-2.0), whatever the run's settings.
DEVIATIONS = (
    "stop signs are not judged: stop_infraction is never recorded (the embedded server has no traffic.stop "
    "actors; docs/scenarios.md, 'Criteria not evaluated')",
    "minimum speed compares the ego with every other vehicle within 50 m, where MinimumSpeedRouteTest "
    "compares it with the Background Activity's vehicles (role_name 'background') anywhere",
    "the route timeout is the scenario's criteria.timeout_s (default 10 s + 0.5 s per metre of route), "
    "where RouteTimeoutBehavior starts at 300 s and extends it as the ego advances",
    "route deviation is the lateral distance from the route's lane path (> 30 m), where InRouteTest measures "
    "the distance to the nearest of the next route waypoints",
)
END_ON_COLLISION_DEVIATION = ("the route ended at the first collision (env.end_on_collision=true), where the "
                              "Leaderboard 2.0 drives on and counts every further collision")
MIN_SPEED_WEIGHT = 0.3
# Bench2Drive comfort bounds (github.com/Thinklab-SJTU/Bench2Drive, `tools/efficiency_smoothness_benchmark.py`):
# longitudinal accel, lateral accel, jerk, longitudinal jerk, yaw acceleration, yaw rate, after a Savitzky-Golay
# filter (window 7, order 2); a 20-step window is comfortable when every sample keeps within all of them.
COMFORT_BOUNDS = {"lon_accel": (-4.05, 2.40), "lat_accel": (-4.89, 4.89), "jerk": (-8.37, 8.37),
                  "lon_jerk": (-4.13, 4.13), "yaw_accel": (-1.93, 1.93), "yaw_rate": (-0.95, 0.95)}
COMFORT_WINDOW = 20
SAVGOL_WINDOW, SAVGOL_ORDER = 7, 2
TTC_HORIZON_S = 10.0


def deviations(end_on_collision: bool) -> list[str]:
    """Every rule of a run's scoring that differs from the Leaderboard 2.0's (for its results)."""
    return [*DEVIATIONS, *([END_ON_COLLISION_DEVIATION] if end_on_collision else [])]


def infraction_penalty(kinds: Iterable[str], outside_lanes_pct: float = 0.0,
                       min_speed_pct_per_quarter: Sequence[float] = ()) -> float:
    """The Leaderboard 2.0 penalty: product of coefficients and of the percentage terms."""
    penalty = 1.0
    for kind in kinds:
        penalty *= PENALTY.get(kind, 1.0)
    penalty *= 1.0 - outside_lanes_pct / 100.0
    for pct in min_speed_pct_per_quarter:
        penalty *= 1.0 - MIN_SPEED_WEIGHT * (1.0 - pct / 100.0)
    return penalty


def driving_score(route_completion: float, penalty: float) -> float:
    return max(route_completion * penalty, 0.0)


@dataclass(frozen=True)
class RouteScore:
    driving_score: float
    route_completion: float
    infraction_penalty: float


def score_route(route_completion: float, infraction_kinds: Sequence[str], outside_lanes_pct: float,
                min_speed_pct_per_quarter: Sequence[float]) -> RouteScore:
    """One route's DS, RC and IP. Outside lanes and minimum speed enter through their percentages, so their
    end-of-route infraction records are not counted again as coefficients."""
    kinds = [k for k in infraction_kinds if k in PENALTY]
    penalty = infraction_penalty(kinds, outside_lanes_pct, min_speed_pct_per_quarter)
    return RouteScore(driving_score(route_completion, penalty), route_completion, penalty)


def global_score(route_scores: Sequence[float | None]) -> float:
    """Mean over every route of the suite; a route that is missing or crashed (None) counts 0."""
    if not route_scores:
        return 0.0
    return float(np.mean([0.0 if s is None else s for s in route_scores]))


def infractions_per_km(counts: dict[str, int], route_lengths_m: Sequence[float],
                       completions: Sequence[float]) -> dict[str, float]:
    """Each kind's count per kilometre driven, with km = sum(route_length/1000 x completion/100)."""
    km = sum(length / 1000.0 * completion / 100.0 for length, completion in zip(route_lengths_m, completions))
    return {kind: (n / km if km > 0 else 0.0) for kind, n in counts.items()}


def bench2drive_success(completed: bool, infraction_kinds: Sequence[str]) -> bool:
    """Bench2Drive: the route completed with no infraction other than minimum speed."""
    return completed and all(k == "min_speed_infractions" for k in infraction_kinds)


def _savgol_derivative(values: np.ndarray, dt: float, deriv: int) -> np.ndarray:
    """Savitzky-Golay smoothed derivative (window 7, order 2) with edge samples taken from the nearest fit."""
    half = SAVGOL_WINDOW // 2
    if len(values) < SAVGOL_WINDOW:
        return np.zeros_like(values)
    offsets = np.arange(-half, half + 1)
    vander = np.vander(offsets, SAVGOL_ORDER + 1, increasing=True)
    coefficients = np.linalg.pinv(vander)[deriv] * math.factorial(deriv) / dt ** deriv
    inner = np.convolve(values, coefficients[::-1], mode="valid")
    return np.concatenate([np.full(half, inner[0]), inner, np.full(half, inner[-1])])


def comfort(x: np.ndarray, y: np.ndarray, yaw_rad: np.ndarray, dt: float) -> float:
    """Bench2Drive comfort: the share (0-1) of 20-step windows whose every sample keeps within the bounds."""
    n = len(x) // COMFORT_WINDOW * COMFORT_WINDOW
    if n == 0:
        return 1.0
    yaw = np.unwrap(yaw_rad)
    vx, vy = _savgol_derivative(x, dt, 1), _savgol_derivative(y, dt, 1)
    ax, ay = _savgol_derivative(x, dt, 2), _savgol_derivative(y, dt, 2)
    forward, left = np.cos(yaw), np.sin(yaw)
    lon_accel = ax * forward + ay * left
    lat_accel = -ax * left + ay * forward
    jerk_x, jerk_y = _savgol_derivative(vx, dt, 2), _savgol_derivative(vy, dt, 2)
    signals = {
        "lon_accel": lon_accel, "lat_accel": lat_accel, "jerk": np.hypot(jerk_x, jerk_y),
        "lon_jerk": _savgol_derivative(lon_accel, dt, 1), "yaw_rate": _savgol_derivative(yaw, dt, 1),
        "yaw_accel": _savgol_derivative(yaw, dt, 2),
    }
    ok = np.ones(n, bool)
    for name, (low, high) in COMFORT_BOUNDS.items():
        ok &= (signals[name][:n] >= low) & (signals[name][:n] <= high)
    return float(ok.reshape(-1, COMFORT_WINDOW).all(axis=1).mean())


def time_to_collision(ego_xy: np.ndarray, ego_v: np.ndarray, ego_yaw: float, ego_half: np.ndarray,
                      others_xy: np.ndarray, others_v: np.ndarray, others_yaw: np.ndarray,
                      others_half: np.ndarray) -> float:
    """Smallest time (s) until the ego's bounding box touches another actor's, both moving at constant velocity
    and heading: inf when none does within TTC_HORIZON_S, 0 when they already touch.

    Boxes are oriented rectangles seen from above (centre xy, velocity, yaw in radians, half length and width).
    Exact for that motion: by the separating axis theorem two rectangles touch exactly when their projections
    overlap on each of the four edge directions, and on each direction the overlap is one interval of time."""
    if len(others_xy) == 0:
        return math.inf
    heading = lambda yaw: np.stack([np.cos(yaw), np.sin(yaw)], -1)  # noqa: E731
    left = lambda u: np.stack([-u[..., 1], u[..., 0]], -1)  # noqa: E731
    ego_u, other_u = heading(np.float64(ego_yaw)), heading(np.asarray(others_yaw, float))  # (2,), (N, 2)
    ego_axes = np.broadcast_to(np.stack([ego_u, left(ego_u)]), (len(others_xy), 2, 2))
    axes = np.concatenate([ego_axes, np.stack([other_u, left(other_u)], 1)], 1)  # (N, 4, 2)
    # Half widths of both boxes along each axis, and their centres' gap and closing speed along it.
    reach = lambda u, half: np.abs(axes @ u[..., None])[..., 0] * half[..., :1] \
        + np.abs(axes @ left(u)[..., None])[..., 0] * half[..., 1:]  # noqa: E731
    radius = reach(np.broadcast_to(ego_u, other_u.shape), np.broadcast_to(ego_half, others_half.shape)) \
        + reach(other_u, np.asarray(others_half, float))
    gap = np.einsum("nkj,nj->nk", axes, others_xy - ego_xy)
    rate = np.einsum("nkj,nj->nk", axes, others_v - ego_v)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-radius - gap) / rate, (radius - gap) / rate
    still = np.abs(rate) < 1e-9  # a constant gap: touching for all time on this axis, or never
    start = np.where(still, np.where(np.abs(gap) <= radius, -np.inf, np.inf), np.minimum(t1, t2)).max(axis=1)
    end = np.where(still, np.where(np.abs(gap) <= radius, np.inf, -np.inf), np.maximum(t1, t2)).min(axis=1)
    touch = (start <= end) & (end >= 0.0) & (start <= TTC_HORIZON_S)
    return float(np.maximum(start[touch], 0.0).min()) if touch.any() else math.inf
