"""BitLinear: the BitNet b1.58 layer (ternary weights, 8-bit activations) and its full-precision twin.

The recipe follows "The Era of 1-bit LLMs" (arXiv 2402.17764) and its training-tips note:

* weights: one absmean scale per tensor, ``s_w = 1 / max(mean|W|, 1e-5)``; ``round(W * s_w)`` clipped to
  {-1, 0, +1}; the matmul sees ``W_q / s_w``.
* activations: one absmax scale per token, ``s_x = 127 / max|x|``; ``round(x * s_x)`` clipped to
  [-128, 127]; the matmul sees ``x_q / s_x``.
* an RMSNorm in front of every ternary matmul (it lives inside the layer, so a block needs no extra
  pre-norm and the attention-output and FFN-down projections get the "subln" norm for free);
* no biases;
* a straight-through estimator, ``x + (q(x) - x).detach()``: the forward pass sees quantized values, the
  backward pass treats quantization as the identity so the latent full-precision weights keep learning.

With ``quant="none"`` the same layer is RMSNorm + bias-free float Linear: the full-precision twin has exactly
the same architecture and parameter names, so the two differ only in arithmetic.

What stays in higher precision, and why: the RMSNorm gains (a few hundred numbers that set the scale the
quantizer sees), the embeddings (camera, position, command, speed and target-point projections: lookups or
tiny inputs whose ternarisation saves nothing measurable) and the output heads (a few thousand weights that
produce metres and m/s directly, where a ternary rounding error is a steering error). Everything else
(both stem stages, every attention and FFN projection) is ternary; see docs/policy.md.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Quant = Literal["ternary", "none"]

SCALE_EPS = 1e-5  # the clamp on mean|W| (BitNet b1.58 recipe) and on max|x|: keeps both scales finite
ACT_MAX = 127.0  # per-token absmax maps to +-127; values are clipped to the int8 range [-128, 127]


def weight_quant(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternarise a weight tensor with the per-tensor absmean scale.

    Returns ``(codes, scale)``: ``codes`` holds exactly {-1, 0, +1} (in ``w``'s dtype) and ``scale`` is the
    0-d tensor ``s_w = 1 / max(mean|w|, 1e-5)``, so ``codes / scale`` approximates ``w``.
    """
    scale = 1.0 / w.abs().mean().clamp(min=SCALE_EPS)
    return (w * scale).round().clamp(-1, 1), scale


def activation_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize activations to 8 bits with one absmax scale per token (the last dimension is the feature axis).

    Returns ``(codes, scale)``: integer-valued ``codes`` in [-128, 127] (in ``x``'s dtype) and per-token
    ``scale = 127 / max|x|`` of shape ``x.shape[:-1] + (1,)``, so ``codes / scale`` approximates ``x``.
    """
    scale = ACT_MAX / x.abs().amax(dim=-1, keepdim=True).clamp(min=SCALE_EPS)
    return (x * scale).round().clamp(-128, 127), scale


def ste(x: torch.Tensor, x_quantized: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: the value of ``x_quantized``, the gradient of ``x`` (identity)."""
    return x + (x_quantized - x).detach()


class _FakeQuant(torch.autograd.Function):
    """``ste(x, codes / scale)`` of `activation_quant` (``weights=False``) or `weight_quant` (``True``) as one
    autograd node: the same values and the same identity gradient, without the two extra full-size tensors
    (``q - x`` and ``x + ...``) per call that the composed form makes and keeps for backward. Training speed on
    a CPU is mostly such elementwise passes."""

    @staticmethod
    def forward(x: torch.Tensor, weights: bool) -> torch.Tensor:
        if weights:
            codes, scale = weight_quant(x)
            return codes.div_(scale)
        # `activation_quant` with the elementwise passes done in place
        scale = ACT_MAX / x.abs().amax(dim=-1, keepdim=True).clamp_(min=SCALE_EPS)
        return (x * scale).round_().clamp_(-128, 127).div_(scale)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def fake_quant(x: torch.Tensor, weights: bool = False) -> torch.Tensor:
    """The quantized value of ``x`` (``codes / scale``) with a straight-through (identity) gradient."""
    return _FakeQuant.apply(x, weights)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (kept in full precision). Written out rather than
    `F.rms_norm`: on a CPU at batch 1 (the heads' norms of a driving step) torch's fused op took ~36 us a call
    against ~20 us for these five ops, and training at batch 64 measured the same either way."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + self.eps) * self.weight


class BitLinear(nn.Module):
    """RMSNorm followed by a bias-free linear map whose weights are ternary and inputs 8-bit (``quant="ternary"``),
    or plain float (``quant="none"``, the full-precision twin).

    The latent weight ``self.weight`` stays float for training; `agent.export` ternarises it once offline.
    """

    def __init__(self, in_features: int, out_features: int, quant: Quant) -> None:
        super().__init__()
        if quant not in ("ternary", "none"):
            raise ValueError(f"BitLinear quant must be 'ternary' or 'none', got {quant!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.quant = quant
        self.norm = RMSNorm(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.trunc_normal_(self.weight, std=in_features**-0.5)

    def forward(
        self, x: torch.Tensor, activation: str | None = None, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``norm(x) @ W^T``; ``activation="relu_square"`` returns ``relu(y) ** 2``; ``residual`` returns
        ``residual + y`` (last). The packed runtime's layer takes the same arguments and fuses both."""
        x = self.norm(x)
        w = self.weight
        if self.quant == "ternary":
            x, w = fake_quant(x), fake_quant(w, weights=True)
        y = F.linear(x, w)
        if activation == "relu_square":
            y = F.relu(y).square()
        elif activation is not None:
            raise ValueError(f"BitLinear: unknown activation {activation!r} (None or 'relu_square')")
        return y if residual is None else residual + y

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, quant={self.quant}"
