"""`slimdrive dataset rerender` on a real collected episode (docs/data.md): with the recorded rig it reproduces the
recorded poses and, within JPEG tolerance, the recorded images; with another rig, resolution and weather the
images change and the labels do not; a schema version 1 file is refused naming it."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import slimdrive
from envs.provenance import sha256_file
from training.logs.reader import DrivingLogDataset, EpisodeReader, verify_dir
from training.logs.schema import META_EPISODE, META_LAYOUT, META_VERSION, arrow_schema
from training.logs.writer import append_manifest, read_manifest

KEY = "short_drive-s0"
SAME = 1.0  # mean abs difference per pixel (0..255) of a re-render with the recorded rig: 0.07 measured (both are
#             JPEGs of the same scene, posed from float32 poses instead of the simulator's float64 state)
LABELS = ("frame", "time_s", "command", "target_point", "control", "expert", "waypoints", "target_speed", "brake",
          "hazard_kind", "hazard_actor", "light_state", "perturbed", "events", "infractions", "light_states",
          "ego_velocity", "ego_acceleration", "speed")


def _table(root, key=KEY) -> tuple[EpisodeReader, list[dict]]:
    reader = EpisodeReader(root, read_manifest(root).entries[key])
    return reader, reader.read(columns=[c for c in reader.file.schema_arrow.names if c != "cameras"]).to_pylist()


def test_the_recorded_rig_reproduces_poses_and_images(short_dataset, tmp_path, capsys):
    out = tmp_path / "same"
    assert slimdrive.main(["dataset", "rerender", f"data={short_dataset}", f"out={out}", f"episode={KEY}"]) == 0
    assert f"{KEY}: " in capsys.readouterr().out
    source, recorded = _table(short_dataset)
    again, rendered = _table(out)
    assert len(rendered) == len(recorded) and again.layout == source.layout
    for i, (a, b) in enumerate(zip(recorded, rendered)):
        np.testing.assert_allclose(b["ego_location"], a["ego_location"], atol=1e-4, err_msg=f"step {i}")
        np.testing.assert_allclose(b["ego_rotation"], a["ego_rotation"], atol=1e-3, err_msg=f"step {i}")
        assert [x["id"] for x in b["actors"]] == [x["id"] for x in a["actors"]] and a["actors"]
        for x, y in zip(a["actors"], b["actors"]):
            assert x["type_id"] == y["type_id"] and x["color"] == y["color"]
            np.testing.assert_allclose([y[f] for f in "xyz"], [x[f] for f in "xyz"], atol=1e-4)
            np.testing.assert_allclose(y["yaw"], x["yaw"], atol=1e-3)
        assert all(b[c] == a[c] for c in LABELS), f"step {i}: labels differ"
        difference = np.abs(again.cameras(i).astype(np.int16) - source.cameras(i)).mean()
        assert difference < SAME, f"step {i}: re-rendered images differ by {difference:.2f}"
    meta = again.metadata
    entry = read_manifest(short_dataset).entries[KEY]
    assert meta["rerendered_from"]["file"] == entry["file"] and meta["rerendered_from"]["sha256"] == entry["sha256"]
    assert meta["rerendered_from"]["weather"] == "recorded" and meta["weather"] == source.metadata["weather"]
    assert meta["rig"] == source.metadata["rig"] and meta["scenario_sha256"] == source.metadata["scenario_sha256"]
    assert len(verify_dir(out).ok) == 1

    assert slimdrive.main(["dataset", "rerender", f"data={short_dataset}", f"out={out}", f"episode={KEY}"]) == 0
    assert "resuming: 1 episodes already re-rendered" in capsys.readouterr().out


def test_another_rig_resolution_and_weather(short_dataset, tmp_path):
    out = tmp_path / "front1"
    assert slimdrive.main(["dataset", "rerender", f"data={short_dataset}", f"out={out}", f"episode={KEY}",
                           "rig=front1", "image_size_x=96", "image_size_y=48", "weather=HardRainNoon"]) == 0
    source, recorded = _table(short_dataset)
    again, rendered = _table(out)
    assert (again.layout["cameras"], again.layout["height"], again.layout["width"]) == (1, 48, 96)
    assert again.layout["camera_names"] == ["front"] and again.cameras(0).shape == (1, 48, 96, 3)
    assert again.metadata["rig"]["name"] == "front1" and again.metadata["weather"]["name"] == "HardRainNoon"
    assert again.metadata["weather"]["precipitation"] > 0
    assert again.metadata["rerendered_from"]["image_size"] == [96, 48]
    assert all(b[c] == a[c] for a, b in zip(recorded, rendered) for c in LABELS)
    item = DrivingLogDataset(out, "all", image_size=None)[5]
    assert tuple(item["cameras"].shape) == (1, 48, 96, 3)


def test_a_version_1_file_is_refused_naming_it(short_dataset, tmp_path, capsys):
    """Version 1 logs (collected before the colours, light states and ego blueprint were recorded) cannot be
    re-rendered faithfully: refused with the file named and the fix."""
    source = read_manifest(short_dataset).entries[KEY]
    table = pq.read_table(short_dataset / source["file"])
    meta = json.loads(table.schema.metadata[META_EPISODE])
    layout = table.schema.metadata[META_LAYOUT]
    for key in ("ego_blueprint", "ego_color", "traffic_lights", "schema_version"):
        meta.pop(key, None)
    schema = arrow_schema(json.loads(layout)["waypoints_k"], version=1)
    actors = [[{k: v for k, v in a.items() if k != "color"} for a in row] for row in table.column("actors").to_pylist()]
    columns = {name: table.column(name) for name in schema.names if name != "actors"}
    columns["actors"] = pa.array(actors, type=schema.field("actors").type)
    old = pa.table(columns, schema=schema).replace_schema_metadata(
        {META_VERSION: b"1", META_EPISODE: json.dumps(meta).encode(), META_LAYOUT: layout})
    data = tmp_path / "v1"
    data.mkdir()
    path = data / source["file"]
    pq.write_table(old, path)
    append_manifest(data, {**source, "sha256": sha256_file(path), "bytes": path.stat().st_size, "schema_version": 1})
    assert EpisodeReader(data, read_manifest(data).entries[KEY]).metadata["schema_version"] == 1  # readable

    assert slimdrive.main(["dataset", "rerender", f"data={data}", f"out={tmp_path / 'out'}"]) == 1
    printed = capsys.readouterr().out
    assert f"not re-rendered: {path}: schema version 1" in printed and "re-collect the episode" in printed


@pytest.mark.parametrize("args, message", [
    (["out={data}"], "is the source folder"),
    (["out={tmp}/x", "episode=nope"], "has no episode 'nope'"),
])
def test_bad_arguments_are_named(short_dataset, tmp_path, capsys, args, message):
    args = [a.format(data=short_dataset, tmp=tmp_path) for a in args]
    assert slimdrive.main(["dataset", "rerender", f"data={short_dataset}", *args]) == 2
    assert message in capsys.readouterr().out
