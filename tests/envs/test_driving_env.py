"""DrivingEnv through a real embedded simulator: Gymnasium contract, determinism, frame matching, faults."""
from __future__ import annotations

import math
import os
import queue
import re
import signal
import time
import warnings
from dataclasses import replace

import carla
import gymnasium as gym
import numpy as np
import psutil
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers slimdrive/Drive-v0)
from agent.model import DrivingNet, ModelConfig
from agent.policy import DrivingPolicy
from envs.budget import BudgetConfig, ComputeBudgetWrapper, DeviceProfile, InvalidAction
from envs.driving_env import DrivingEnv, ScenarioFailed, ServerDied
from envs.server.launch import launch
from scenarios.compile import load_scenario
from scenarios.engine import ScenarioRun
from scenarios.route import RoadOption

SMALL = dict(rig="front1", image_size_x=64, image_size_y=32)


@pytest.fixture
def env():
    environment = DrivingEnv(**SMALL)
    yield environment
    environment.close()


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
def test_check_env_passes_with_the_eight_camera_rig():
    environment = gym.make("slimdrive/Drive-v0", render_mode="rgb_array", image_size_x=64, image_size_y=32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the checker's warnings (spaces, determinism, render) are failures
            check_env(environment.unwrapped, skip_render_check=False)
        obs, _ = environment.reset(seed=1)
        assert obs["cameras"].shape == (8, 32, 64, 3) and obs["cameras"].dtype == np.uint8
        picture = environment.render()
        assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
        assert environment.metadata["render_fps"] == 20
    finally:
        environment.close()


def test_command_space_is_exactly_the_route_commands():
    """CARLA's RoadOption LEFT 1 .. CHANGELANERIGHT 6: what the route announces and what the policy embeds."""
    space = DrivingEnv(**SMALL).observation_space["command"]
    assert [int(c) for c in range(space.start, space.start + space.n)] == [int(o) for o in RoadOption] == \
        list(range(1, 7))
    assert not space.contains(0) and not space.contains(-1) and not space.contains(7)


def test_render_mode_is_checked_and_none_renders_nothing():
    with pytest.raises(ValueError, match="render_mode 'human'"):
        DrivingEnv(**SMALL, render_mode="human")
    with pytest.warns(UserWarning, match="without a render mode"):
        assert DrivingEnv(**SMALL).render() is None


def _drive(environment, seed: int, steps: int = 30):
    obs, _ = environment.reset(seed=seed)
    observations, positions = [obs], []
    for _ in range(steps):
        obs, _, terminated, truncated, info = environment.step(np.array([0.05, 0.6, 0.0], np.float32))
        observations.append(obs)
        location = environment.privileged.ego.get_location()
        positions.append((location.x, location.y, info["step"]))
        if terminated or truncated:
            break
    return observations, positions


def test_same_seed_gives_identical_observations_and_trajectory(env):
    first_obs, first_path = _drive(env, seed=11)
    second_obs, second_path = _drive(env, seed=11)
    assert first_path == second_path
    for a, b in zip(first_obs, second_obs):
        assert np.array_equal(a["cameras"], b["cameras"])
        assert np.array_equal(a["target_point"], b["target_point"]) and a["command"] == b["command"]
    _, other_path = _drive(env, seed=12)
    assert other_path != first_path


def test_every_image_belongs_to_the_tick_it_is_returned_with(env):
    env.reset(seed=4)
    handles = env.privileged
    mount = env.rig.cameras[0]
    bp = handles.world.get_blueprint_library().find("sensor.camera.rgb")
    for key, value in (("image_size_x", env.rig.image_size_x), ("image_size_y", env.rig.image_size_y),
                       ("fov", mount.fov)):
        bp.set_attribute(key, str(value))
    twin = handles.world.spawn_actor(bp, carla.Transform(carla.Location(mount.x, mount.y, mount.z),
                                                         carla.Rotation(mount.pitch, mount.yaw, mount.roll)),
                                     attach_to=handles.ego)
    images: queue.Queue = queue.Queue()
    twin.listen(images.put)
    for _ in range(20):  # until the client's subscription to the new camera is live
        handles.world.tick()
        if not images.empty():
            break
    try:
        by_frame = {}
        previous = None
        for _ in range(25):
            obs, _, _, _, info = env.step(np.array([0.0, 1.0, 0.0], np.float32))
            frame = env.frame
            while frame not in by_frame:
                image = images.get(timeout=10.0)
                by_frame[image.frame] = np.frombuffer(image.raw_data, np.uint8).reshape(
                    image.height, image.width, 4)[:, :, 2::-1]
            assert np.array_equal(obs["cameras"][0], by_frame[frame])
            if previous is not None and info["ego_speed"] > 3.0:
                assert not np.array_equal(obs["cameras"][0], previous), "a moving camera must see a new image"
            previous = obs["cameras"][0].copy()
    finally:
        twin.stop()
        twin.destroy()


@pytest.mark.parametrize("action", [[math.nan, 0.5, 0.0], [0.0, math.inf, 0.0], [0.0, 0.0, -math.inf]])
def test_a_non_finite_action_is_refused_and_the_episode_goes_on(env, action):
    """A NaN steer passed straight to the simulator would give the ego a NaN pose (issue 17); the env refuses it
    naming the call, applies nothing, and the next valid step continues the same episode."""
    env.reset(seed=2)
    frame = env.unwrapped.frame
    with pytest.raises(InvalidAction, match=r"DrivingEnv.step returned a non-finite action"):
        env.step(action)
    assert env.unwrapped.frame == frame
    obs, _, _, _, info = env.step([0.0, 0.3, 0.0])
    assert env.unwrapped.frame == frame + 1 and info["failure"] is None and np.isfinite(obs["speed"]).all()


def test_observation_follows_the_route(env):
    obs, info = env.reset(seed=2)
    assert info["route_completion"] < 2.0 and info["route_length_m"] > 100.0
    assert obs["target_point"][0] == pytest.approx(env.cfg.target_ahead_m, abs=1.0)
    assert abs(obs["target_point"][1]) < 0.5
    total = 0.0
    for _ in range(40):
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.7, 0.0], np.float32))
        total += reward
        if terminated or truncated:
            break
    assert obs["speed"][0] > 3.0
    travelled = env.privileged.criteria.distance_driven
    assert info["route_completion"] * info["route_length_m"] / 100.0 == pytest.approx(travelled, abs=1.0)
    assert total == pytest.approx(info["route_completion"], abs=0.5), "reward tracks route progress"


def test_killing_the_server_mid_episode_fails_the_episode_and_the_next_reset_works():
    env = DrivingEnv(**SMALL, render_mode="rgb_array", **{"server.timeout_s": 6.0})
    try:
        env.reset(seed=5)
        _, _, _, _, healthy = env.step(env.action_space.sample())
        picture = env.render()
        os.kill(env._server.pid, signal.SIGKILL)
        _, _, terminated, truncated, info = env.step(np.array([0.0, 0.5, 0.0], np.float32))
        assert terminated and "failed" in info["failure"]
        assert info.keys() == healthy.keys() and info["done_reason"] == "simulator failure"
        assert info["step"] == healthy["step"] and info["route_length_m"] == healthy["route_length_m"]
        assert env.render().shape == picture.shape, "render shows the last images after a failure"
        with pytest.raises(gym.error.ResetNeeded):
            env.step(np.array([0.0, 0.5, 0.0], np.float32))
        obs, info = env.reset(seed=5)
        assert obs["cameras"].shape[0] == 1
        _, _, _, _, info = env.step(np.array([0.0, 0.5, 0.0], np.float32))
        assert info["failure"] is None
    finally:
        env.close()


def test_a_dead_remote_server_raises_server_died_naming_it_in_step_and_reset():
    server = launch("town")
    endpoint = f"{server.host}:{server.port}"
    env = DrivingEnv(**SMALL, **{"server.host": server.host, "server.port": server.port, "server.timeout_s": 6.0})
    try:
        env.reset(seed=3)
        env.step(np.array([0.0, 0.5, 0.0], np.float32))
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(10)
        with pytest.raises(ServerDied, match=re.escape(endpoint)):
            env.step(np.array([0.0, 0.5, 0.0], np.float32))
        # The first reset finds the episode's actors gone with the server, the second cannot connect.
        for _ in range(2):
            with pytest.raises(ServerDied, match=re.escape(endpoint)):
                env.reset(seed=3)
        server.stop()
        server = launch("town", port=server.port)  # "check that it is running, then reset"
        _, info = env.reset(seed=3)
        assert info["failure"] is None
    finally:
        env.close()
        server.stop()


BAD_LANE_CHANGE = """\
name: lane_change_off_the_road
description: A car on the outer shoulder told to change lanes to the right, where there is no lane.
map: straight
ego:
  route: {start: {x: 680, y: -5.25}, length: 200}
actors:
  - id: lost_car
    blueprint: vehicle.audi.a2
    place: {s: 40, lane: shoulder}
    behaviour:
      - wait: {time: 0.5}
      - name: swerve
        change_lane: {direction: right, distance: 12, speed: 5}
"""


def test_a_scenario_error_names_scenario_and_behaviour_and_leaves_the_server_running(env, tmp_path):
    file = tmp_path / "lane_change_off_the_road.yaml"
    file.write_text(BAD_LANE_CHANGE)
    env.reset(seed=0, options={"scenario": ScenarioRun(load_scenario(file), 0)})
    server = env._server
    with pytest.raises(ScenarioFailed) as caught:
        for _ in range(40):
            env.step(np.array([0.0, 0.3, 0.0], np.float32))
    message = str(caught.value)
    assert "'lane_change_off_the_road'" in message and str(file) in message
    assert "actor 'lost_car', behaviour step 1 'swerve' (change_lane)" in message
    assert "no lane to the right" in message
    assert "embedded simulator" not in message
    assert env._server is server and server.alive(), "a healthy server is not stopped for a scenario's fault"
    obs, info = env.reset(seed=0)
    assert env._server is server and info["failure"] is None


def test_two_envs_run_side_by_side_in_an_async_vector_env():
    # "spawn", as docs/env.md advises: a forked worker inherits this process's CARLA clients (earlier tests')
    # without their threads, and hangs when it frees one. "envs:" makes each fresh worker import the package.
    vector = gym.vector.AsyncVectorEnv([lambda: gym.make("envs:slimdrive/Drive-v0", **SMALL)] * 2, context="spawn")
    try:
        obs, _ = vector.reset(seed=[1, 2])
        assert obs["cameras"].shape == (2, 1, 32, 64, 3)
        for _ in range(5):
            obs, reward, terminated, truncated, info = vector.step(np.tile([0.0, 0.5, 0.0], (2, 1)).astype(np.float32))
        assert obs["speed"].shape == (2, 1) and np.all(obs["speed"] > 0.0)
        assert not np.array_equal(obs["cameras"][0], obs["cameras"][1])
    finally:
        vector.close()


def _one_camera_policy() -> DrivingPolicy:
    """A real (untrained) network for the front1 rig: what the wrapper checks, prices and times."""
    torch.manual_seed(0)
    return DrivingPolicy(DrivingNet(ModelConfig(cameras=1, image_height=32, image_width=64, dim=64)))


def test_a_policy_slower_than_the_deadline_gets_delayed_controls_and_fallback_steps(env):
    # priced on the Orin roofline plus 120 ms of overhead: every control takes force two steps late
    slow = replace(DeviceProfile.load("jetson_agx_orin"), overhead_ms=120.0)
    policy = _one_camera_policy()
    wrapped = ComputeBudgetWrapper(env, policy, BudgetConfig(fallback="brake", latency="profile", device=slow))
    wrapped.reset(seed=6)
    applied, ready = [], []
    for k in range(8):
        _, _, _, _, info = wrapped.step(np.array([0.0, 0.1 * (k + 1), 0.0], np.float32))
        applied.append(info["applied_action"].tolist())
        ready.append(info["budget_ready"])
        control = env.privileged.ego.get_control()
        assert (control.throttle, control.brake) == pytest.approx(tuple(info["applied_action"][1:]))
    assert ready == [True, False, True, False, True, False, True, False]
    brake = [0.0, 0.0, 1.0]
    np.testing.assert_allclose(applied, [brake, brake, [0, 0.1, 0], brake, [0, 0.3, 0], brake, [0, 0.5, 0], brake],
                               atol=1e-6)
    assert info["budget"]["missed_deadlines"] == 4 and info["budget"]["fallback_steps"] == 5


def test_the_wrapper_times_the_policy_of_a_plain_gymnasium_loop():
    policy = _one_camera_policy()
    env = gym.make("slimdrive/Drive-v0", **SMALL)
    try:
        # measured on this machine, against 1 ms per camera frame (1 ms: front1 has one camera)
        measured = replace(BudgetConfig.load("orin_1ms_per_frame"), latency="measured")
        wrapped = ComputeBudgetWrapper(env, policy, measured)
        obs, _ = wrapped.reset(seed=3)
        for _ in range(12):
            obs, _, terminated, truncated, info = wrapped.step(policy.act(obs))  # the user's loop, untouched
        stats, latencies = info["budget"], wrapped.budget.stats.latencies_ms
        assert stats["latency_source"] == "measured" and stats["deadline_ms"] == 1.0
        assert stats["decisions"] == len(latencies) > 0 and min(latencies) > 0.05  # the network's call, timed
        assert stats["missed_deadlines"] == sum(latency > 1.0 for latency in latencies)
        # the wrapper sees what the loop spends: a loop that also sleeps 70 ms misses every deadline, and its
        # first control takes force ceil(L / 50 ms) - 1 >= 1 steps after its observation, the fallback braking
        obs, _ = wrapped.reset(seed=3)
        chosen, applied = [], []
        for _ in range(6):
            chosen.append(policy.act(obs))
            time.sleep(0.07)
            obs, _, _, _, info = wrapped.step(chosen[-1])
            applied.append(info["applied_action"])
        latencies = wrapped.budget.stats.latencies_ms
        assert info["budget"]["missed_deadlines"] == info["budget"]["decisions"] and min(latencies) >= 70.0
        delay = math.ceil(latencies[0] / 50.0) - 1  # one step, unless the loaded machine took over 100 ms
        while len(applied) <= delay:  # as slow as before, so that no later decision takes force at once
            time.sleep(0.07)
            applied.append(wrapped.step(np.zeros(3, np.float32))[4]["applied_action"])
        np.testing.assert_array_equal(applied[0], [0.0, 0.0, 1.0])  # nothing has arrived: the fallback brakes
        np.testing.assert_allclose(applied[delay], np.clip(chosen[0], [-1, 0, 0], [1, 1, 1]), atol=1e-6)
    finally:
        env.close()


def test_two_hundred_resets_leak_neither_actors_nor_memory(env):
    env.reset(seed=0)
    world = env.privileged.world
    actors_before = len(world.get_actors())
    server, me = psutil.Process(env._server.pid), psutil.Process()
    for seed in range(20):
        env.reset(seed=seed)
    server_rss, my_rss = server.memory_info().rss, me.memory_info().rss
    for seed in range(180):
        env.reset(seed=seed)
        env.step(np.array([0.0, 0.5, 0.0], np.float32))
    assert len(world.get_actors()) == actors_before
    assert server.memory_info().rss - server_rss < 20 * 2**20
    assert me.memory_info().rss - my_rss < 40 * 2**20
