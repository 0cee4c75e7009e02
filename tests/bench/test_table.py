"""`slimdrive table` end to end on the real simulator, with tiny policies from real training runs: the expert's
logs of two short drives, then `slimdrive train` of a ternary policy and its FP twin (bitnet_tiny, 20 steps), two
seeds each. The table scores them on a suite of which it runs two episodes (suites.<name>.limit), and its figures
are held to the evaluation records they come from."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import slimdrive
from agent.registry import AgentError, make_agent
from bench.table import METRICS

SUITE = Path(__file__).resolve().parent / "scenarios" / "table.yaml"  # three 3-second drives; the table runs two
SMALL_RIG = ["env.image_size_x=64", "env.image_size_y=32"]  # eight cameras at the tiny network's own size
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("table")
    data = root / "data"
    assert slimdrive.main(["collect", f"suite={SUITE}", "limit=2", "max_steps=60", f"out={data}", *SMALL_RIG]) == 0
    files: dict[str, list[Path]] = {"packed": [], "fp": []}
    for quant in ("ternary", "none"):
        for seed in SEEDS:
            out = root / f"{quant}-s{seed}"
            assert slimdrive.main([
                "train", f"data={data}", f"out={out}", "model=bitnet_tiny", f"model.net.quant={quant}", f"seed={seed}",
                "epochs=2", "samples_per_epoch=160", "batch_size=16", "workers=0", "threads=1", "frame_cache=false",
                "val_fraction=0", "log_every=5", "checkpoint_every=100",
            ]) == 0
            if quant == "ternary":
                files["packed"].append(out / "policy.safetensors")
            else:
                files["fp"].append(out / "model.safetensors")
    return files


def table_args(files: dict[str, list[Path]], out: Path, *extra: str) -> list[str]:
    return ["table", f"packed=[{','.join(map(str, files['packed']))}]", f"fp=[{','.join(map(str, files['fp']))}]",
            "~suites.val", "~suites.rare_events", f"+suites.short.suite={SUITE}", "+suites.short.limit=2",
            f"out={out}", "latency.iterations=10", "latency.warmup=1", *SMALL_RIG, *extra]


def test_the_table_runs_end_to_end_and_resumes(trained, tmp_path, capsys):
    out = tmp_path / "table"
    assert slimdrive.main(table_args(trained, out)) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'table.md'} and {out / 'table.json'}" in printed
    assert "## The slimdrive table" in printed and (out / "table.md").read_text() in printed

    table = json.loads((out / "table.json").read_text())
    assert table["suites"]["short"]["episodes"] == 2 and table["budget"]["latency"] == "profile"
    assert list(table["rows"]) == ["packed", "fp32", "bf16", "expert"]
    sources = {"packed": trained["packed"], "fp32": trained["fp"], "bf16": trained["fp"], "expert": ["expert"]}
    for name, row in table["rows"].items():
        figures = row["suites"]["short"]
        results = [json.loads((Path(f) / "results.json").read_text()) for f in figures["evaluations"]]
        assert [r["agent"] for r in results] == [str(f) for f in sources[name]]
        assert {r["precision"] for r in results} == {"bfloat16" if name == "bf16" else "float32"}
        for folder in figures["evaluations"]:  # the limit: two of the suite's three episodes
            assert len((Path(folder) / "episodes.jsonl").read_text().splitlines()) == 2
        for metric, read in METRICS.items():  # mean and std over the seeds' own evaluation results
            values = [read(r) for r in results]
            assert figures[metric]["per_seed"] == values
            assert figures[metric]["mean"] == pytest.approx(statistics.mean(values), abs=1e-4)
            expected_std = statistics.stdev(values) if len(values) > 1 else None
            assert figures[metric]["std"] == (pytest.approx(expected_std, abs=1e-4) if expected_std else expected_std)
        episodes = [json.loads(line) for f in figures["evaluations"]
                    for line in (Path(f) / "episodes.jsonl").read_text().splitlines()]
        assert figures["decisions"] == sum(e["budget"]["decisions"] for e in episodes) > 0
        assert sum(figures["missed_deadlines"]["per_seed"]) == sum(e["budget"]["missed_deadlines"] for e in episodes)

    packed, fp32, bf16 = (table["rows"][name]["compute"] for name in ("packed", "fp32", "bf16"))
    assert packed["weight_bytes_disk"] < fp32["weight_bytes_disk"]
    assert packed["weight_bytes_resident"] < bf16["weight_bytes_resident"] < fp32["weight_bytes_resident"]
    assert bf16["weight_bytes_disk"] is None and bf16["float_dtype"] == "bfloat16"
    assert packed["ternary_macs_per_step"] > 0 and fp32["ternary_macs_per_step"] == 0
    assert 0 < packed["arithmetic_energy_uj_per_step"] < bf16["arithmetic_energy_uj_per_step"]
    assert bf16["arithmetic_energy_uj_per_step"] < fp32["arithmetic_energy_uj_per_step"]
    for figures in (packed, fp32, bf16):
        assert 0 < figures["latency_ms_p50"] <= figures["latency_ms_p99"] and figures["camera_frames_per_s"] > 0
    assert table["rows"]["expert"]["compute"] is None and table["compute"]["cameras"] == "8 x 32x64"

    # Rerun: every episode is already in its folder, so nothing drives again and the scores stay.
    assert slimdrive.main(table_args(trained, out)) == 0
    assert capsys.readouterr().out.count("resuming: 2 episodes already") == 7
    again = json.loads((out / "table.json").read_text())
    for name, row in again["rows"].items():
        assert row["suites"]["short"]["driving_score"] == table["rows"][name]["suites"]["short"]["driving_score"]

    # A lower limit scores only the episodes it asks for, from the same folders.
    assert slimdrive.main([*table_args(trained, out), "suites.short.limit=1"]) == 0
    for row in json.loads((out / "table.json").read_text())["rows"].values():
        figures = row["suites"]["short"]
        for folder, score in zip(figures["evaluations"], figures["driving_score"]["per_seed"]):
            first = json.loads((Path(folder) / "episodes.jsonl").read_text().splitlines()[0])
            assert json.loads((Path(folder) / "results.json").read_text())["episodes_run"] == 1
            assert score == pytest.approx(first["driving_score"], abs=1e-3)


def test_wrong_files_are_named_with_the_fix(trained, tmp_path, capsys):
    out = str(tmp_path / "table")
    packed, fp = trained["packed"], trained["fp"]
    cases = [
        ([f"packed=[{packed[0]},{tmp_path / 'missing.safetensors'}]"], "packed[1]=", "no such file"),
        ([f"fp=[{packed[0]}]"], f"fp[0]={packed[0]}", "model.net.quant=none"),
        ([f"packed=[{fp[0]}]"], f"packed[0]={fp[0]}", "policy.safetensors"),
        ([f"fp=[{packed[0].with_name('model.safetensors')}]"], "fp[0]=", "a checkpoint of a ternary model"),
        (["rows=[packed,fp16]"], "rows=", "expected some of packed, fp32, bf16, expert"),
    ]
    for overrides, where, fix in cases:
        assert slimdrive.main([*table_args(trained, out), *overrides]) == 2
        printed = capsys.readouterr().out
        assert printed.startswith("slimdrive table: ") and where in printed and fix in printed, printed


def test_precision_runs_a_float_checkpoint_as_its_bf16_twin(trained):
    cfg = {"precision": "bfloat16"}
    twin = make_agent(str(trained["fp"][0]), None, OmegaConf.create(cfg))
    assert {p.dtype for p in twin.net.parameters()} == {torch.bfloat16} and twin.footprint().dtype == "bfloat16"
    with pytest.raises(AgentError, match="packed ternary file runs on the ternary runtime"):
        make_agent(str(trained["packed"][0]), None, OmegaConf.create(cfg))
    with pytest.raises(AgentError, match="precision applies to a float checkpoint"):
        make_agent("expert", None, OmegaConf.create(cfg))
    with pytest.raises(AgentError, match="expected one of float32, bfloat16"):
        make_agent(str(trained["fp"][0]), None, OmegaConf.create({"precision": "fp8"}))
