"""Camera geometry through the stock client: pinhole size and position, depth, semantics, occlusion."""
from __future__ import annotations

import math

import numpy as np
import pytest

from envs.maps.geometry import wrap_angle
from envs.rig import load_rig

from render_helpers import (
    SEMANTIC_CAR,
    SEMANTIC_PEDESTRIAN,
    SEMANTIC_ROAD,
    SEMANTIC_TRUCK,
    depth_metres,
    focal,
    semantic,
)

FORWARD = ("front_wide", "front_main", "front_narrow")
TARGET = "vehicle.lincoln.mkz_2020"
TARGET_EXTENT = (2.45, 1.06)  # blueprint bounding box half length, half width (m)


def _row_at_height(mount, width: int, height: int, z: float, depth: float) -> int:
    """Image row where a point `z` m above the ground at planar `depth` m projects (pitch 0 cameras)."""
    return int(round(height / 2.0 - 0.5 + focal(width, mount.fov) * (mount.z - z) / depth))


def test_car_ahead_is_centred_with_pinhole_width_and_true_depth(stage):
    stage.spawn(TARGET, 20.0, 0.0, color="20,60,200")
    rig = load_rig("tesla8")
    sem_rig, depth_rig = stage.cameras(sensor_type="sensor.camera.semantic_segmentation"), \
        stage.cameras(sensor_type="sensor.camera.depth")
    sem, dep = stage.capture(sem_rig, depth_rig)
    for mount in (m for m in rig.cameras if m.name in FORWARD):
        w, h = rig.image_size_x, rig.image_size_y
        rear = 20.0 - TARGET_EXTENT[0] - mount.x  # planar depth of the car's rear face
        row = _row_at_height(mount, w, h, 0.6, rear)  # through the body, below the glass
        cols = np.flatnonzero(semantic(sem[mount.name])[row] == SEMANTIC_CAR)
        expected = focal(w, mount.fov) * 2.0 * TARGET_EXTENT[1] / rear
        assert abs(len(cols) - expected) <= 2.0, f"{mount.name}: {len(cols)} px wide, pinhole says {expected:.1f}"
        assert cols.max() - cols.min() + 1 == len(cols), f"{mount.name}: the car's row is not contiguous"
        assert abs(0.5 * (cols.min() + cols.max()) - (w / 2.0 - 0.5)) <= 1.0, f"{mount.name}: not centred"
        measured = depth_metres(dep[mount.name])[row, w // 2]
        assert abs(measured - rear) / rear < 0.02, f"{mount.name}: depth {measured:.2f} m, expected {rear:.2f} m"


def test_semantic_ids_on_road_car_and_pedestrian(stage):
    stage.spawn(TARGET, 20.0, 0.0)
    stage.spawn("walker.pedestrian.0001", 10.0, 1.2)
    rig = load_rig("tesla8")
    mount = next(m for m in rig.cameras if m.name == "front_main")
    (sem,) = stage.capture(stage.cameras(sensor_type="sensor.camera.semantic_segmentation"))
    tags = semantic(sem["front_main"])
    w, h, f = rig.image_size_x, rig.image_size_y, focal(rig.image_size_x, mount.fov)
    road_row = _row_at_height(mount, w, h, 0.0, 13.0 - mount.x)
    assert tags[road_row, w // 2] == SEMANTIC_ROAD
    car_row = _row_at_height(mount, w, h, 0.6, 20.0 - TARGET_EXTENT[0] - mount.x)
    assert tags[car_row, w // 2] == SEMANTIC_CAR
    torso_depth = 10.0 - mount.x
    torso = (_row_at_height(mount, w, h, 1.2, torso_depth), int(round(w / 2 - 0.5 + f * 1.2 / torso_depth)))
    assert tags[torso] == SEMANTIC_PEDESTRIAN


def _columns(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask.any(axis=0))


def test_object_behind_shows_only_in_rear_facing_cameras(stage):
    """A truck 14 m behind, dead behind and then one lane to either side. The rear camera sees it (on its
    right when the truck is on the ego's left: it looks backwards); the repeaters (80°, looking back-out)
    see it where the pinhole puts its centre when it is on their side, nothing of it on the other side, and
    only a sliver at their inner edge when it is dead behind; no forward-facing camera sees it."""
    rig = load_rig("tesla8")
    mounts = {m.name: m for m in rig.cameras}
    w = rig.image_size_x
    truck = stage.spawn("vehicle.carlamotors.carlacola", -14.0, 0.0)
    sensors = stage.cameras(sensor_type="sensor.camera.semantic_segmentation")
    for right in (0.0, -3.5, 3.5):
        truck.set_transform(stage.transform(-14.0, right))
        (sem,) = stage.capture(sensors)
        seen = {name: semantic(img) == SEMANTIC_TRUCK for name, img in sem.items()}
        counts = {name: int(mask.sum()) for name, mask in seen.items()}
        for name in ("front_wide", "front_main", "front_narrow", "pillar_left", "pillar_right"):
            assert counts[name] == 0, (right, counts)
        rear = _columns(seen["rear"])
        assert counts["rear"] > 200, (right, counts)
        if right == 0.0:
            assert rear.min() < w / 2 < rear.max(), rear
            assert 0 < counts["repeater_left"] and _columns(seen["repeater_left"]).max() < 8, counts
            assert 0 < counts["repeater_right"] and _columns(seen["repeater_right"]).min() >= w - 8, counts
            continue
        near, far = ("repeater_left", "repeater_right") if right < 0 else ("repeater_right", "repeater_left")
        assert (rear.min() > w / 2) if right < 0 else (rear.max() < w / 2), rear
        assert counts[near] > 200 and counts[far] == 0, (right, counts)
        mount = mounts[near]
        bearing = wrap_angle(math.degrees(math.atan2(right - mount.y, -14.0 - mount.x)) - mount.yaw)
        expected = w / 2 - 0.5 + focal(w, mount.fov) * math.tan(math.radians(bearing))
        columns = _columns(seen[near])
        assert columns.min() <= expected <= columns.max(), \
            f"{near}: truck at columns {columns.min()}..{columns.max()}, its centre projects to {expected:.0f}"


def test_walker_hidden_behind_parked_van_until_it_steps_out(stage):
    stage.spawn("vehicle.mercedes.sprinter", 12.0, 3.3)
    walker = stage.spawn("walker.pedestrian.0003", 16.5, 3.3)
    sensors = stage.cameras(sensor_type="sensor.camera.semantic_segmentation")
    (before,) = stage.capture(sensors)
    walker.set_transform(stage.transform(16.5, 1.0, z=1.0))
    (after,) = stage.capture(sensors)
    rig = load_rig("tesla8")
    for mount in (m for m in rig.cameras if m.name in FORWARD):
        name, depth = mount.name, 16.5 - mount.x
        # at least half the pinhole area of a 0.5 m x 1.7 m figure at that depth (wide 9 px, main 130, narrow 284)
        least = 0.5 * (focal(rig.image_size_x, mount.fov) / depth) ** 2 * 0.5 * 1.7
        assert (semantic(before[name]) == SEMANTIC_PEDESTRIAN).sum() == 0, f"{name} sees through the van"
        assert (semantic(after[name]) == SEMANTIC_PEDESTRIAN).sum() > least, f"{name} misses the walker"


@pytest.mark.parametrize("rig_name", ["front1", "surround6"])
def test_other_rigs_deliver_every_camera(stage, rig_name):
    rig = load_rig(rig_name, image_size_x=64, image_size_y=32)
    (images,) = stage.capture(stage.cameras(rig_name, image_size_x=64, image_size_y=32))
    assert list(images) == rig.names
    assert all(img.shape == (32, 64, 4) and img[..., :3].std() > 5.0 for img in images.values())
