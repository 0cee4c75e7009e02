"""The packed ternary runtime: the exported policy network on int8 activations x 2-bit ternary weights (CPU).

`PackedBitLinear` replaces `BitLinear` in a `DrivingNet` as a submodule; everything else in the network
(attention, embeddings, heads) runs unchanged in float32, so the runtime and the training graph are one model
definition and one forward: `agent.model` calls every projection as ``layer(x, activation=..., residual=...)``,
which `BitLinear` computes as separate float operations and `PackedBitLinear` fuses into its kernel call.
Its weights stay packed in memory, four codes per byte exactly as in the exported file (see `agent.export`).

The kernel is C++ with SIMD intrinsics, compiled once with the system compiler through
`torch.utils.cpp_extension.load` and cached (``$SLIMDRIVE_KERNEL_DIR``, default
``<tmp>/slimdrive-kernels-<uid>``; first build about 15 s) for the best instruction set of the CPU
(`kernel_isa`: ``avx512_vnni`` or ``avx2``; ``$SLIMDRIVE_KERNEL_ISA=avx2`` forces the other build). One call per
layer does, in one OpenMP region (torch's thread count): RMSNorm and absmax int8 quantization per token, then,
per panel of outputs whose 2-bit codes (pre-arranged at load time by `relayout`, same bytes) are unpacked with
two SIMD ops per 32 codes, a register tile of tokens x outputs that multiplies the codes (w + 1) by a
vpbroadcastd of 4 activations: with AVX-512 VNNI, an 8-token x 32-output tile of vpdpbusd adding straight into
int32; with AVX2, a 4-token x 16-output tile of vpmaddubsw with int16 partial sums widened to int32 every 128
inputs (no overflow possible). Then both scales and an optional fused epilogue (squared ReLU for ``up`` and the
stem, the residual addition for ``proj``/``down``).

The kernel source is package data, `agent/kernel.cpp` (``[tool.setuptools.package-data]``), read and built the
way the renderer builds ``envs/server/render/zbuffer.c``; the cache folder is `native.cache_dir`.

Why this kernel rather than the alternatives, measured on the 2-core AMD EPYC (AVX2, no VNNI) the project
started on: ``torch._int_mm`` (oneDNN) takes 18-40 ms for one 256x192x576 product there, 40-80x slower than
float32 ``F.linear``; a fake-quant layer (unpack, float matmul) is by construction no faster than float32.

Agreement with the training graph (`BitLinear` with ``quant="ternary"``): the integer part is exact; the norm
and the scales are float32 in a different summation order, so an activation that lies within float rounding
of a .5 boundary can round the other way. See `TOLERANCE` and `NETWORK_TOLERANCE`; `tests/agent/test_runtime.py`
checks it.
There is no pure-PyTorch fallback: on a CPU without AVX2 `load_kernel` raises, and the fake-quant graph (same
numbers, float speed) is what runs there.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from agent.bitlinear import BitLinear
from agent.model import DrivingNet
from native import cache_dir  # one private cache for all compiled code

# max |runtime - training graph| / max |training graph|. Per layer only float rounding: usually ~1e-6, at worst
# one quantization step where an activation flips to its neighbouring code (3.6e-4 over 60 random layers).
TOLERANCE = 1e-3
# The same at a trained network's outputs. When float rounding flips an activation to its neighbouring int8
# code, that token's layer output moves by one quantization step (up to 1/127 ~ 0.8 % of its range) and the
# move propagates; most batches show ~1e-5, one with a flip 1.3e-3 (waypoints) and 2.4e-3 (target speed) on an
# AVX-512 Xeon whose float kernels sum in another order. An untrained, random-weight network amplifies flips
# layer after layer (up to ~5 %), so there only the per-layer bound holds.
NETWORK_TOLERANCE = 1e-2

KERNEL_SOURCE = Path(__file__).with_name("kernel.cpp")  # package data, built on first use

_loaded = False

# Instruction sets the kernel is compiled for: the compiler flags of each. "avx512_vnni" takes vpdpbusd on zmm
# registers (16 outputs x 4 inputs per instruction), "avx2" vpmaddubsw with an int16 stage.
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma"],
    "avx512_vnni": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"],
}


def kernel_isa() -> str:
    """The instruction set the kernel is built for: the best this CPU has, or ``$SLIMDRIVE_KERNEL_ISA``."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        raise RuntimeError(
            f"packed ternary runtime: the kernel needs an x86-64 CPU with AVX2, this one reports {capability!r}; "
            "run the fake-quant graph instead (a ternary DrivingNet from the training checkpoint, "
            "agent.export.load_checkpoint)"
        )
    best = "avx512_vnni" if capability == "AVX512" and torch.cpu._is_vnni_supported() else "avx2"
    isa = os.environ.get("SLIMDRIVE_KERNEL_ISA", best)
    if isa not in ISA_FLAGS or (isa == "avx512_vnni" and best != isa):
        raise RuntimeError(
            f"packed ternary runtime: SLIMDRIVE_KERNEL_ISA={isa!r} is not one this CPU runs; it runs "
            f"{sorted({'avx2', best})} (unset the variable to take {best!r})"
        )
    return isa


def load_kernel() -> None:
    """Compile (first time only) and register ``torch.ops.slimdrive_ternary.bitlinear`` for `kernel_isa()`."""
    global _loaded
    if _loaded:
        return
    isa = kernel_isa()
    from torch.utils.cpp_extension import load

    source_text = KERNEL_SOURCE.read_text()
    digest = hashlib.sha256((source_text + isa).encode()).hexdigest()[:12]
    build_dir = cache_dir() / digest
    build_dir.mkdir(parents=True, exist_ok=True)
    # a copy in the build folder: torch's build files name their source, and an installed package may be read-only
    source = build_dir / "ternary_kernel.cpp"
    if not source.exists() or source.read_text() != source_text:
        source.write_text(source_text)
    # -fopenmp compiles at::parallel_for into OpenMP regions; the library resolves to torch's own libgomp
    load(
        name=f"slimdrive_ternary_{digest}",
        sources=[str(source)],
        extra_cflags=["-O3", "-fopenmp", *ISA_FLAGS[isa]],
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir),
        is_python_module=False,
    )
    _loaded = True


def relayout(packed: torch.Tensor) -> torch.Tensor:
    """File layout (out, in / 4) -> the kernel's layout (out / 8, in / 16, 32), still four 2-bit codes per byte.

    Bits ``2s..2s+1`` of byte ``4o + j`` of block ``[g, t]`` hold the code of output ``8g + o``, input
    ``16t + 4s + j`` (see the kernel source). Done once at load time; the byte count does not change.
    """
    out_features, quarter = packed.shape
    in_features = quarter * 4
    if packed.dtype != torch.uint8 or out_features % 8 or in_features % 16:
        raise ValueError(
            f"packed runtime: codes must be uint8 (out, in / 4) with out a multiple of 8 and in of 16, "
            f"got {packed.dtype} {tuple(packed.shape)}"
        )
    codes = torch.stack([(packed >> shift) & 3 for shift in (0, 2, 4, 6)], dim=-1).reshape(out_features, in_features)
    blocks = codes.view(out_features // 8, 8, in_features // 16, 4, 4).permute(0, 2, 1, 4, 3)  # g, t, o, j, s
    blocks = blocks.reshape(out_features // 8, in_features // 16, 32, 4)
    return (blocks[..., 0] | (blocks[..., 1] << 2) | (blocks[..., 2] << 4) | (blocks[..., 3] << 6)).contiguous()


EPILOGUE = {None: 0, "relu_square": 1}


class PackedBitLinear(nn.Module):
    """Inference-only BitLinear on packed weights: ``packed`` uint8 (out, in / 4) in the file layout, kept
    resident in the kernel's layout (`relayout`, same bytes); ``w_scale`` = mean|W|.

    ``forward(x, activation=None, residual=None)``: ``activation="relu_square"`` returns ``relu(y) ** 2`` and
    ``residual`` (same shape as the output) returns ``residual + y``, both computed inside the kernel call.
    """

    def __init__(self, norm_weight: torch.Tensor, norm_eps: float, packed: torch.Tensor, w_scale: float) -> None:
        super().__init__()
        self.in_features = packed.shape[1] * 4
        self.out_features = packed.shape[0]
        self.norm_eps = norm_eps
        self.w_scale = w_scale
        self.register_buffer("norm_weight", norm_weight.to(torch.float32).contiguous())
        self.register_buffer("packed", relayout(packed))
        load_kernel()
        self.op = torch.ops.slimdrive_ternary.bitlinear.default  # the overload itself: no lookup per call

    def forward(
        self, x: torch.Tensor, activation: str | None = None, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        # one op call on the caller's shapes (the kernel refuses anything but float32): a batch-1 step of a small
        # network is mostly per-call overhead, so nothing else happens here
        return self.op(x.contiguous(), self.norm_weight, self.norm_eps, self.packed, self.w_scale,
                       EPILOGUE[activation], None if residual is None else residual.contiguous())

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, packed ternary"


def to_runtime(net: DrivingNet, packed: dict[str, tuple[torch.Tensor, float]]) -> DrivingNet:
    """Swap every `BitLinear` of ``net`` for a `PackedBitLinear` in place and return ``net``.

    ``packed`` maps a BitLinear's module name to ``(packed codes (out, in / 4) uint8, mean|W|)``; its latent
    float weight is dropped, so only the packed codes stay resident.
    """
    names = [name for name, module in net.named_modules() if isinstance(module, BitLinear)]
    missing = sorted(set(names) - set(packed))
    if missing:
        raise ValueError(f"packed runtime: no packed weights for {missing}")
    for name in names:
        layer: BitLinear = net.get_submodule(name)
        codes, w_scale = packed[name]
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, PackedBitLinear(layer.norm.weight.detach(), layer.norm.eps, codes, w_scale))
    return net.eval()
