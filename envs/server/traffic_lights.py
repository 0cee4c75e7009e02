"""Traffic-light groups: the lights of one junction take turns, as in CARLA.

One light of a group is active: green for `green_time`, yellow for `yellow_time`, then red, and the next
light (by pole index) becomes green. Lights set by hand through the API run out their own green and yellow
timers and then stay red until their turn. Frozen lights keep their state and elapsed time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

RED, YELLOW, GREEN, OFF, UNKNOWN = 0, 1, 2, 3, 4  # carla.TrafficLightState


@dataclass(eq=False)
class TrafficLight:
    actor_id: int
    sign_id: str  # the OpenDRIVE signal id
    pole_index: int
    group: LightGroup | None = None
    state: int = RED
    elapsed: float = 0.0
    green_time: float = 10.0
    yellow_time: float = 3.0
    red_time: float = 2.0
    frozen: bool = False

    def set_state(self, state: int) -> None:
        if state not in (RED, YELLOW, GREEN, OFF, UNKNOWN):
            raise ValueError(f"unknown traffic light state {state}")
        self.state, self.elapsed = state, 0.0


@dataclass(eq=False)
class LightGroup:
    lights: list[TrafficLight] = field(default_factory=list)
    active: int = 0

    def reset(self) -> None:
        self.active = 0
        for index, light in enumerate(self.lights):
            light.set_state(GREEN if index == 0 else RED)

    def step(self, dt: float) -> None:
        for index, light in enumerate(self.lights):
            if light.frozen:
                continue
            light.elapsed += dt
            if light.state == GREEN and light.elapsed >= light.green_time:
                light.set_state(YELLOW)
            elif light.state == YELLOW and light.elapsed >= light.yellow_time:
                light.set_state(RED)
                if index == self.active:
                    self._advance()

    def _advance(self) -> None:
        self.active = (self.active + 1) % len(self.lights)
        following = self.lights[self.active]
        if not following.frozen:
            following.set_state(GREEN)
        # Red time is what a light waits while the others of the group run through green and yellow.
        for light in self.lights:
            others = [o for o in self.lights if o is not light]
            light.red_time = sum(o.green_time + o.yellow_time for o in others)
