"""Packing round-trips; export -> load -> act reproduces actions; bad files are refused with clear errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_batch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from agent.export import (
    WeightFileError,
    export_packed,
    load_checkpoint,
    load_packed,
    pack_ternary,
    save_checkpoint,
    seal,
    unpack_ternary,
)
from agent.model import DrivingNet
from agent.policy import DrivingPolicy
from agent.shipped import SHIPPED


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=3).map(tuple),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_pack_unpack_round_trips_for_any_shape(shape: tuple[int, ...], seed: int) -> None:
    codes = torch.randint(-1, 2, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.int8)
    packed = pack_ternary(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == (codes.numel() + 3) // 4
    assert torch.equal(unpack_ternary(packed, shape), codes)


def test_packing_uses_the_i2s_codes_four_per_byte() -> None:
    packed = pack_ternary(torch.tensor([-1, 0, 1, 1, -1]))
    # codes 0, 1, 2, 2 -> 0b10_10_01_00; then code 0 padded with three 1s -> 0b01_01_01_00
    assert packed.tolist() == [0b10100100, 0b01010100]


def test_pack_and_unpack_reject_non_ternary_data() -> None:
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        pack_ternary(torch.tensor([2, 0, 0, 0]))
    with pytest.raises(ValueError, match="code 3"):
        unpack_ternary(torch.tensor([0b11], dtype=torch.uint8), (4,))
    with pytest.raises(ValueError, match="expected 2 uint8 bytes"):
        unpack_ternary(torch.zeros(3, dtype=torch.uint8), (2, 4))


def _observations(count: int) -> list[dict]:
    batch = tiny_batch(count, seed=1)
    return [
        {
            "cameras": batch["cameras"][i].numpy(),
            "speed": batch["speed"][i].numpy(),
            "target_point": batch["target_point"][i].numpy(),
            "command": int(batch["command"][i]),
        }
        for i in range(count)
    ]


def test_export_load_act_gives_the_same_actions(trained_tiny: DrivingNet, tmp_path: Path) -> None:
    path = export_packed(trained_tiny, tmp_path / "policy.safetensors")
    packed = DrivingPolicy.from_packed(path)
    again = DrivingPolicy.from_packed(path)
    training_graph = DrivingPolicy(trained_tiny)
    for obs in _observations(4):
        action = packed.act(obs)
        assert np.array_equal(action, again.act(obs))  # loading is deterministic
        np.testing.assert_allclose(action, training_graph.act(obs), atol=0.02)


def test_checkpoint_round_trip_is_exact(trained_tiny: DrivingNet, tmp_path: Path) -> None:
    loaded = load_checkpoint(save_checkpoint(trained_tiny, tmp_path / "train.safetensors"))
    for obs in _observations(2):
        assert np.array_equal(DrivingPolicy(loaded).act(obs), DrivingPolicy(trained_tiny).act(obs))


def _rewrite(path: Path, tensors: dict[str, torch.Tensor] | None = None, sealed: bool = True, **metadata: str) -> None:
    """Rewrite `path` with other tensors or metadata; `sealed`: with its checksum recomputed, as a forger would."""
    with safe_open(str(path), framework="pt") as handle:
        found_metadata = handle.metadata()
        found = {name: handle.get_tensor(name) for name in handle.keys()}
    tensors = found if tensors is None else tensors
    save_file(tensors, str(path), metadata={**found_metadata, **metadata,
                                             **({"checksum": "0" * 64} if sealed else {})})
    if sealed:
        seal(path)


@pytest.fixture()
def exported(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return export_packed(DrivingNet(TINY), tmp_path / "policy.safetensors")


def test_missing_and_non_safetensors_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightFileError, match="no such weight file"):
        load_packed(tmp_path / "absent.safetensors")
    pickled = tmp_path / "pickled.pt"
    torch.save({"weight": torch.zeros(3)}, pickled)
    with pytest.raises(WeightFileError, match=r"pickled\.pt: not a readable safetensors file"):
        load_packed(pickled)


def test_truncated_file_is_refused(exported: Path) -> None:
    exported.write_bytes(exported.read_bytes()[:-100])
    with pytest.raises(WeightFileError, match=f"{exported.name}: not a readable safetensors file.*truncated"):
        load_packed(exported)


def test_a_header_longer_than_the_file_is_refused_without_reading_it(exported: Path) -> None:
    data = bytearray(exported.read_bytes())
    data[:8] = (1 << 40).to_bytes(8, "little")
    exported.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match=f"{exported.name}: not a readable safetensors file .*header claims"):
        load_packed(exported)


def test_the_checksum_covers_the_config(exported: Path) -> None:
    """One byte of the config (heads 1 -> 2, still a valid config for dim 32) was outside the version-2 checksum
    and loaded silently; it is refused naming the file."""
    data = exported.read_bytes()
    assert data.count(b'\\"heads\\": 1') == 1
    exported.write_bytes(data.replace(b'\\"heads\\": 1', b'\\"heads\\": 2'))
    with pytest.raises(WeightFileError, match=f"^{exported}: checksum mismatch: the file \\(its config"):
        load_packed(exported)


def test_one_changed_config_byte_of_the_shipped_policy_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "slimdrive.safetensors"
    shutil.copy(SHIPPED, copy)
    load_packed(copy)  # the shipped file itself loads
    data = copy.read_bytes()
    copy.write_bytes(data.replace(b'\\"heads\\": 2', b'\\"heads\\": 4'))  # 128 / 4: a valid config
    assert copy.read_bytes() != data
    with pytest.raises(WeightFileError, match=f"^{copy}: checksum mismatch"):
        load_packed(copy)


def test_a_header_claiming_a_huge_model_is_refused_before_anything_is_allocated(exported: Path) -> None:
    """The config rewritten to dim 8192 (a 6 GB model at this config) with the checksum left as it was: loading
    under a 3 GiB address-space limit, in a subprocess, is refused naming the file instead of allocating."""
    with safe_open(str(exported), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
    _rewrite(exported, sealed=False, config=json.dumps({**config, "dim": 8192}))
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from agent.export import WeightFileError, load_packed
        try:
            load_packed({str(exported)!r})
        except WeightFileError as error:
            print(error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{exported}: checksum mismatch"), done.stdout


def test_modified_bytes_fail_the_checksum(exported: Path) -> None:
    data = bytearray(exported.read_bytes())
    data[-5] ^= 0x01  # a bit of the last tensor
    exported.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="checksum mismatch"):
        load_packed(exported)


def test_other_format_version_is_refused(exported: Path) -> None:
    _rewrite(exported, format_version="1")  # the first architecture (one patch embedding, no brake head)
    with pytest.raises(WeightFileError, match="format_version is '1'.*re-export"):
        load_packed(exported)


def test_checkpoint_is_not_accepted_as_packed_export(tmp_path: Path) -> None:
    path = save_checkpoint(DrivingNet(TINY), tmp_path / "train.safetensors")
    with pytest.raises(WeightFileError, match="format is 'slimdrive-checkpoint', expected 'slimdrive-ternary'"):
        load_packed(path)


def test_config_that_does_not_match_the_tensors_is_refused(exported: Path) -> None:
    with safe_open(str(exported), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
    _rewrite(exported, config=json.dumps({**config, "dim": 96, "heads": 3}))
    with pytest.raises(WeightFileError, match=r"tensor \S+ is .* expected"):
        load_packed(exported)


def test_invalid_ternary_code_is_refused(exported: Path) -> None:
    with safe_open(str(exported), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    tensors["stem.weight.codes"][0] = 0xFF
    _rewrite(exported, tensors)
    with pytest.raises(WeightFileError, match="stem.weight.codes: .*code 3"):
        load_packed(exported)
