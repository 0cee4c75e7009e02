"""The base of every server-side sensor model (`sensors.py`, `cameras.py`): `sensor_tick` and checked numeric
attributes. It sits below both modules, so the cameras subclass it without importing `sensors`.
"""
from __future__ import annotations

import math
from collections.abc import Callable


def number(attribute: Callable[[str, str], str], name: str, default: str) -> float:
    """A numeric attribute; a ValueError naming the attribute and its value when it is not a finite number."""
    text = attribute(name, default) or default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"attribute '{name}' = '{text}' is not a finite number")
    return value


class SensorModel:
    """Base: honours `sensor_tick` (seconds between measurements; 0 means every tick).

    Constructors check the attributes they read and raise ValueError naming the attribute, its value and
    the allowed range; `World.spawn` builds the model before it registers the actor.
    """

    type_id = -1
    is_event = False  # reports events (collisions) rather than measuring every tick

    def __init__(self, attribute: Callable[[str, str], str]):
        self.period = number(attribute, "sensor_tick", "0.0")
        if self.period < 0.0:
            raise ValueError(f"attribute 'sensor_tick' = {self.period:g} is out of range: must be 0 or more seconds")
        self._next_time = 0.0

    def due(self, now: float) -> bool:
        if now + 1e-9 < self._next_time:
            return False
        self._next_time = now + self.period
        return True

    def measure(self, world, actor, contacts, dt, header) -> list[bytes]:
        raise NotImplementedError
