"""The packed runtime computes what the quantized training graph computes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import LR, overfit, tiny_batch

from agent.bitlinear import BitLinear, weight_quant
from agent.export import export_packed, load_packed, pack_ternary
from agent.model import Block, DrivingNet, ModelConfig
from agent.runtime import NETWORK_TOLERANCE, TOLERANCE, PackedBitLinear, kernel_isa, load_kernel

DEFAULT = ModelConfig.from_dict(
    yaml.safe_load((Path(__file__).resolve().parents[2] / "conf/model/bitnet_small.yaml").read_text())["net"]
)


def packed_twin(layer: BitLinear) -> PackedBitLinear:
    """The packed runtime's layer for a ternary `BitLinear` (what `agent.export` and `load_packed` make)."""
    codes, scale = weight_quant(layer.weight.detach())
    codes = pack_ternary(codes).view(layer.out_features, -1)
    return PackedBitLinear(layer.norm.weight.detach(), layer.norm.eps, codes, float(1 / scale))


@pytest.mark.parametrize("rows, in_features, out_features",
                         [(1, 32, 32), (7, 192, 96), (257, 768, 192), (256, 64, 576)])
def test_packed_layer_matches_the_fake_quant_layer(rows: int, in_features: int, out_features: int) -> None:
    torch.manual_seed(rows)
    layer = BitLinear(in_features, out_features, "ternary")
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
    packed = packed_twin(layer)
    x = torch.randn(rows, in_features) * 3
    with torch.no_grad():
        expected, found = layer(x), packed(x)
    assert found.shape == expected.shape
    assert (found - expected).abs().max() <= TOLERANCE * expected.abs().max()


def test_packed_network_matches_the_training_graph(trained_tiny: DrivingNet, tmp_path) -> None:
    runtime = load_packed(export_packed(trained_tiny, tmp_path / "policy.safetensors"))
    for seed in range(4):  # several batches: one of them shows an activation flipped by float rounding here
        batch = tiny_batch(4, seed=seed)
        inputs = (batch["cameras"], batch["speed"], batch["target_point"], batch["command"])
        with torch.inference_mode():
            expected, found = trained_tiny(*inputs), runtime(*inputs)
        for name in expected:
            error = (found[name] - expected[name]).abs().max()
            assert error <= NETWORK_TOLERANCE * expected[name].abs().max(), (seed, name)


def test_the_default_network_on_the_packed_runtime_matches_its_training_graph(tmp_path) -> None:
    """End to end on conf/model/bitnet_small (the stem, the patch merge, the fusion block, every head), after a
    short overfit so that the weights are not random (a random network amplifies float-rounding flips)."""
    torch.manual_seed(0)
    net = DrivingNet(DEFAULT)
    overfit(net, tiny_batch(4, cfg=DEFAULT), 40, LR["ternary"])
    net.eval()
    runtime = load_packed(export_packed(net, tmp_path / "policy.safetensors"))
    for seed in range(3):
        batch = tiny_batch(4, seed=seed, cfg=DEFAULT)
        inputs = (batch["cameras"], batch["speed"], batch["target_point"], batch["command"])
        with torch.inference_mode():
            expected, found = net(*inputs), runtime(*inputs)
        assert set(found) == {"waypoints", "target_speed", "speed", "brake"}
        for name in expected:
            error = (found[name] - expected[name]).abs().max()
            assert error <= NETWORK_TOLERANCE * expected[name].abs().max(), (seed, name)


def test_the_runtime_runs_the_training_blocks_with_packed_layers(trained_tiny: DrivingNet, tmp_path) -> None:
    """One forward: the runtime's blocks are `Block` itself (no subclass, no class swap), its projections
    `PackedBitLinear` submodules holding only packed codes and norm gains."""
    runtime = load_packed(export_packed(trained_tiny, tmp_path / "policy.safetensors"))
    blocks = [m for m in runtime.modules() if isinstance(m, Block)]
    assert blocks and all(type(block) is Block for block in blocks)
    assert not any(isinstance(m, BitLinear) for m in runtime.modules())
    packed = [name for name, m in runtime.named_modules() if isinstance(m, PackedBitLinear)]
    assert {"stem", "merge", "encoder.0.qkv", "fusion.0.down"} <= set(packed)
    assert all(not name.endswith(("qkv.weight", "stem.weight")) for name, _ in runtime.named_parameters())


def test_relayout_puts_every_code_where_the_kernel_reads_it() -> None:
    from agent.export import unpack_ternary
    from agent.runtime import relayout

    torch.manual_seed(0)
    out_features, in_features = 16, 64
    codes = torch.randint(-1, 2, (out_features, in_features))
    blocks = relayout(pack_ternary(codes).view(out_features, -1))
    assert blocks.shape == (out_features // 8, in_features // 16, 32) and blocks.dtype == torch.uint8
    for n in range(out_features):
        for k in range(in_features):
            byte = blocks[n // 8, k // 16, 4 * (n % 8) + k % 4]
            assert int((byte >> (2 * ((k % 16) // 4))) & 3) - 1 == codes[n, k]
    assert torch.equal(unpack_ternary(pack_ternary(codes), (out_features, in_features)).long(), codes)


def test_fused_epilogues_equal_the_separate_float_operations() -> None:
    torch.manual_seed(1)
    packed = packed_twin(BitLinear(192, 96, "ternary"))
    x, residual = torch.randn(2, 9, 192), torch.randn(2, 9, 96)
    plain = packed(x)
    assert torch.equal(packed(x, activation="relu_square"), torch.relu(plain).square())
    assert torch.equal(packed(x, residual=residual), residual + plain)


def test_the_kernel_refuses_what_it_cannot_compute() -> None:
    packed = packed_twin(BitLinear(64, 32, "ternary"))
    with pytest.raises(RuntimeError, match="x must be contiguous float32"):
        packed(torch.randn(3, 64, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="residual must be contiguous float32 of the output's shape"):
        packed(torch.randn(3, 64), residual=torch.randn(3, 16))


def test_every_kernel_build_this_cpu_runs_matches_the_fake_quant_layer() -> None:
    """The best build is what this process loaded; the AVX2 build (what CPUs without AVX-512 VNNI get) is
    checked in a fresh process, where `SLIMDRIVE_KERNEL_ISA` selects it."""
    load_kernel()
    if kernel_isa() == "avx2":
        pytest.skip("this CPU runs only the avx2 build, which the tests above checked")
    layer_test = f"{__file__}::test_packed_layer_matches_the_fake_quant_layer"
    env = {**os.environ, "SLIMDRIVE_KERNEL_ISA": "avx2"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", layer_test],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_an_isa_this_cpu_lacks_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("SLIMDRIVE_KERNEL_ISA", "neon")
    with pytest.raises(RuntimeError, match="SLIMDRIVE_KERNEL_ISA='neon' is not one this CPU runs"):
        kernel_isa()
