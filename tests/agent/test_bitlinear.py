"""BitLinear follows BitNet b1.58: ternary absmean weights, 8-bit absmax activations, STE, norm, no bias."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agent.bitlinear import BitLinear, activation_quant, ste, weight_quant


def test_weight_quant_is_ternary_with_absmean_scale() -> None:
    torch.manual_seed(0)
    w = torch.randn(48, 80) * 0.3
    codes, scale = weight_quant(w)
    assert set(codes.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.allclose(scale, 1.0 / w.abs().mean())
    assert torch.equal(codes, (w * scale).round().clamp(-1, 1))


def test_weight_quant_clamps_the_scale_of_an_all_zero_tensor() -> None:
    codes, scale = weight_quant(torch.zeros(4, 4))
    assert torch.equal(codes, torch.zeros(4, 4))
    assert scale.item() == 1e5


def test_activation_quant_is_8_bit_per_token_absmax() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 7, 64) * torch.tensor([0.01, 1.0, 100.0])[:, None, None]
    codes, scale = activation_quant(x)
    assert codes.min() >= -128 and codes.max() <= 127
    assert torch.equal(codes, codes.round())
    assert torch.allclose(scale, 127.0 / x.abs().amax(dim=-1, keepdim=True))
    assert torch.equal(codes.abs().amax(dim=-1), torch.full((3, 7), 127.0))  # every token uses the full range
    assert ((codes / scale - x).abs() <= 0.5 / scale + 1e-6).all()  # within half a quantization step


def test_ste_passes_gradients_as_identity() -> None:
    x = torch.randn(5, 9, requires_grad=True)
    y = ste(x, x.detach().round())
    assert torch.equal(y, x.detach().round())
    upstream = torch.randn(5, 9)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_ternary_bitlinear_forward_and_gradient() -> None:
    torch.manual_seed(0)
    layer = BitLinear(32, 16, "ternary")
    x = torch.randn(4, 32, requires_grad=True)
    y = layer(x)
    normed = F.rms_norm(x.detach(), (32,), layer.norm.weight.detach(), layer.norm.eps)
    x_codes, x_scale = activation_quant(normed)
    w_codes, w_scale = weight_quant(layer.weight.detach())
    assert torch.allclose(y, (x_codes / x_scale) @ (w_codes / w_scale).T, atol=1e-5)
    # the straight-through gradient reaches the latent weights as if the matmul were float
    y.sum().backward()
    expected = torch.ones(4, 16).T @ (x_codes / x_scale)
    assert torch.allclose(layer.weight.grad, expected, atol=1e-5)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bitlinear_has_no_bias_and_the_twin_is_norm_plus_float_linear() -> None:
    torch.manual_seed(0)
    layer = BitLinear(24, 8, "none")
    assert {name for name, _ in layer.named_parameters()} == {"weight", "norm.weight"}
    x = torch.randn(3, 24)
    expected = F.linear(F.rms_norm(x, (24,), layer.norm.weight, layer.norm.eps), layer.weight)
    assert torch.allclose(layer(x), expected)
