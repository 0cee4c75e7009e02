"""The packed runtime computes what the quantized training graph computes."""
from __future__ import annotations

import pytest
import torch

from agent.bitlinear import BitLinear, weight_quant
from agent.export import load_packed, export_packed, pack_ternary
from agent.model import DrivingNet
from agent.runtime import TOLERANCE, PackedBitLinear, load_kernel
from conftest import tiny_batch


@pytest.mark.parametrize("rows, in_features, out_features", [(1, 32, 32), (7, 192, 96), (257, 768, 192), (256, 64, 576)])
def test_packed_layer_matches_the_fake_quant_layer(rows: int, in_features: int, out_features: int) -> None:
    load_kernel()
    torch.manual_seed(rows)
    layer = BitLinear(in_features, out_features, "ternary")
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
    codes, scale = weight_quant(layer.weight.detach())
    packed = PackedBitLinear(
        layer.norm.weight.detach(), layer.norm.eps, pack_ternary(codes).view(out_features, -1), float(1 / scale)
    )
    x = torch.randn(rows, in_features) * 3
    with torch.no_grad():
        expected, found = layer(x), packed(x)
    assert found.shape == expected.shape
    assert (found - expected).abs().max() <= TOLERANCE * expected.abs().max()


def test_packed_network_matches_the_training_graph(trained_tiny: DrivingNet, tmp_path) -> None:
    runtime = load_packed(export_packed(trained_tiny, tmp_path / "policy.safetensors"))
    batch = tiny_batch(4, seed=2)
    inputs = (batch["cameras"], batch["speed"], batch["target_point"], batch["command"])
    with torch.inference_mode():
        expected, found = trained_tiny(*inputs), runtime(*inputs)
    for name in expected:
        assert (found[name] - expected[name]).abs().max() <= TOLERANCE * expected[name].abs().max(), name
