"""Camera geometry through the stock client: pinhole size and position, depth, semantics, occlusion."""
from __future__ import annotations

import numpy as np
import pytest

from envs.rig import load_rig

from render_helpers import SEMANTIC_CAR, SEMANTIC_PEDESTRIAN, SEMANTIC_ROAD, SEMANTIC_TRUCK, depth_metres, focal, semantic

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


def test_object_behind_shows_only_in_rear_facing_cameras(stage):
    stage.spawn("vehicle.carlamotors.carlacola", -14.0, 0.0)
    (sem,) = stage.capture(stage.cameras(sensor_type="sensor.camera.semantic_segmentation"))
    seen = {name: int((semantic(img) == SEMANTIC_TRUCK).sum()) for name, img in sem.items()}
    assert seen["rear"] > 200, seen
    for name in ("front_wide", "front_main", "front_narrow", "pillar_left", "pillar_right"):
        assert seen[name] == 0, seen


def test_walker_hidden_behind_parked_van_until_it_steps_out(stage):
    stage.spawn("vehicle.mercedes.sprinter", 12.0, 3.3)
    walker = stage.spawn("walker.pedestrian.0003", 16.5, 3.3)
    sensors = stage.cameras(sensor_type="sensor.camera.semantic_segmentation")
    (before,) = stage.capture(sensors)
    walker.set_transform(stage.transform(16.5, 1.0, z=1.0))
    (after,) = stage.capture(sensors)
    for name in ("front_main", "front_narrow"):
        assert (semantic(before[name]) == SEMANTIC_PEDESTRIAN).sum() == 0, f"{name} sees through the van"
        assert (semantic(after[name]) == SEMANTIC_PEDESTRIAN).sum() > 20, f"{name} misses the walker"


@pytest.mark.parametrize("rig_name", ["front1", "surround6"])
def test_other_rigs_deliver_every_camera(stage, rig_name):
    rig = load_rig(rig_name, image_size_x=64, image_size_y=32)
    (images,) = stage.capture(stage.cameras(rig_name, image_size_x=64, image_size_y=32))
    assert list(images) == rig.names
    assert all(img.shape == (32, 64, 4) and img[..., :3].std() > 5.0 for img in images.values())
