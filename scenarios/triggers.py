"""Trigger conditions, evaluated each tick from the ego's state, the clock and the events so far."""
from __future__ import annotations

from dataclasses import dataclass

import carla

from .route import Route
from .schema import Trigger

MIN_SPEED_FOR_TTA = 0.1  # m/s: below this the ego is "not arriving" (time to arrival is effectively infinite)


@dataclass
class TriggerContext:
    route: Route
    ego_location: carla.Location
    ego_speed: float
    ego_s: float  # ego's progress along the route (m)
    time: float  # seconds since the scenario started
    step_time: float  # seconds since the current step started
    events: set[str]  # "<actor>.<step>.started|finished" seen so far
    actor_location: carla.Location
    actor_s: float  # the actor's reference point along the route (m)


def time_to_arrival(ctx: TriggerContext, at_s: float) -> float:
    """Seconds until the ego reaches route distance `at_s` at its current speed (<= 0 once passed)."""
    ahead = at_s - ctx.ego_s
    return ahead / max(ctx.ego_speed, MIN_SPEED_FOR_TTA) if ahead > 0 else 0.0


def fires(trigger: Trigger, ctx: TriggerContext) -> bool:
    kind = trigger.kind
    if kind == "ego_distance":
        reference = ctx.route.point_at(trigger.at_s).location if trigger.at_s is not None else ctx.actor_location
        return ctx.ego_location.distance_2d(reference) <= trigger.ego_distance
    if kind == "ego_time_to_arrival":
        at_s = trigger.at_s if trigger.at_s is not None else ctx.actor_s
        return time_to_arrival(ctx, at_s) <= trigger.ego_time_to_arrival
    if kind == "ego_passed":
        return ctx.ego_s >= trigger.ego_passed
    if kind == "time":
        return ctx.time >= trigger.time
    if kind == "after":
        return ctx.step_time >= trigger.after
    return trigger.event in ctx.events
