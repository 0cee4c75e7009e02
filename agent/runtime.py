"""The packed ternary runtime: the exported policy network on int8 activations x 2-bit ternary weights (CPU).

`PackedBitLinear` replaces `BitLinear` in a `DrivingNet`; everything else in the network (attention, embeddings,
heads, residuals) runs unchanged in float32, so the runtime and the training graph are one model definition.
Its weights stay packed in memory, four codes per byte exactly as in the exported file (see `agent.export`).

The kernel is C++ with AVX2 intrinsics, compiled once with the system compiler through
`torch.utils.cpp_extension.load` and cached (``$SLIMDRIVE_KERNEL_DIR``, default
``<tmp>/slimdrive-kernels-<uid>``; first build about 15 s). One call does, per token: RMSNorm, absmax int8
quantization, then for every output the integer dot product with the ternary row (vpmaddubsw on unpacked
codes, int16 partial sums widened to int32 every 64 inputs, so nothing can overflow), then both scales.
Threads (torch's own OpenMP pool) split the outputs.

Why this kernel rather than the alternatives, measured on the 2-core AMD EPYC (AVX2, no VNNI) this project
targets: ``torch._int_mm`` (oneDNN) takes 18-40 ms for one 256x192x576 product there, 40-80x slower than
float32 ``F.linear``; a fake-quant layer (unpack, float matmul) is by construction no faster than float32.

Agreement with the training graph (`BitLinear` with ``quant="ternary"``): the integer part is exact; the norm
and the scales are float32 in a different summation order, so an activation that lies within float rounding
of a .5 boundary can round the other way. See `TOLERANCE`; `tests/agent/test_runtime.py` checks it.
There is no pure-PyTorch fallback: on a CPU without AVX2 `load_kernel` raises, and the fake-quant graph (same
numbers, float speed) is what runs there.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from agent.bitlinear import BitLinear
from agent.model import DrivingNet

# max |runtime - training graph| / max |training graph|, checked per layer and for a trained network's outputs
# (measured: ~1e-6 per layer, ~3e-5 for the tiny trained test network). An activation that float rounding
# flips to the neighbouring int8 code moves an output by one quantization step, well below this bound; but
# an untrained network (random weights) amplifies such flips layer after layer, so there only the per-layer
# bound holds (the default random-weight net differs by up to ~5% at its outputs).
TOLERANCE = 1e-3

_KERNEL_SOURCE = r"""
// slimdrive packed runtime: RMSNorm + int8 activations x 2-bit ternary weights, x86-64 with AVX2.
//
// y[m, n] = sum_k q[m, k] * w[n, k] * dequant[m] * w_scale, with q = round(rmsnorm(x) * 127 / max|.|) per
// token and w in {-1, 0, +1}. Weights stay in the slimdrive file layout (4 codes per byte, code = w + 1, weight
// 4i + j in bits 2j..2j+1 of byte i of its row). vpmaddubsw multiplies the unsigned codes (w + 1) by the signed
// activations; subtracting sum_k q[m, k] once per token gives sum_k w q exactly: sum((w + 1) q) - sum(q).
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t KFLUSH = 64;  // int16 lanes add <= 32 pair sums of |.| <= 2 * 2 * 127: well within int16
constexpr int MR = 4;  // tokens per micro-tile: 4 tokens x 2 vectors = 8 int16 accumulators in registers

float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float hmax_ps(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// One token: RMSNorm with gain, then absmax quantization to int8 (round half to even, like torch.round).
void norm_quantize_row(const float* x, const float* gain, int64_t k, float eps, int8_t* q, int32_t* q_sum,
                       float* dequant) {
  __m256 sq = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    sq = _mm256_fmadd_ps(v, v, sq);
  }
  const __m256 inv_rms = _mm256_set1_ps(1.0f / std::sqrt(hsum_ps(sq) / static_cast<float>(k) + eps));
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv_rms), _mm256_loadu_ps(gain + i));
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v));
  }
  const float scale = 127.0f / std::max(hmax_ps(amax), 1e-5f);
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  __m256i total = _mm256_setzero_si256();
  for (int64_t i = 0; i < k; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv_rms), _mm256_loadu_ps(gain + i));
    v = _mm256_round_ps(_mm256_mul_ps(v, vscale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i c = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
    total = _mm256_add_epi32(total, c);
    // int32 x 8 -> int8 x 8 (values already in range, so the saturating packs are exact)
    const __m128i c16 = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm_packs_epi16(c16, c16));
  }
  *q_sum = hsum_epi32(total);
  *dequant = 1.0f / scale;
}


struct Operands {
  const int8_t* q;
  const int32_t* q_sum;
  const float* dequant;
  int64_t k;
  int64_t n_out;
  float w_scale;
  float* y;
};

constexpr int64_t NV = 2;              // 16-output vectors per panel
constexpr int64_t PANEL = 16 * NV;     // outputs per panel

// Unpack PANEL weight rows (2-bit codes, file layout) into one byte per code, interleaved so that one 32-byte
// load holds the codes of 16 outputs for one pair of inputs: panel[((k / 2) * NV + v) * 32 + 2 * j + k % 2] is
// the code of output 16 v + j for input k.
void unpack_panel(const uint8_t* packed, int64_t k, uint8_t* panel) {
  for (int64_t c = 0; c < PANEL; ++c) {
    const uint8_t* row = packed + c * (k / 4);
    uint8_t* dst = panel + (c / 16) * 32 + 2 * (c % 16);
    for (int64_t i = 0; i < k; ++i) dst[(i / 2) * NV * 32 + i % 2] = (row[i / 4] >> (2 * (i % 4))) & 3;
  }
}

// R tokens x PANEL outputs. Lanes of each accumulator are outputs, so no horizontal sums are needed: every
// vpmaddubsw multiplies the codes of 16 outputs by one broadcast pair of activations.
template <int R>
void panel_tile(const Operands& op, const uint8_t* panel, int64_t m0, int64_t n0) {
  const int64_t k = op.k;
  alignas(32) int32_t acc[R][PANEL] = {};
  for (int64_t k0 = 0; k0 < k; k0 += KFLUSH) {
    const int64_t k1 = std::min(k, k0 + KFLUSH);
    __m256i acc16[R][NV];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc16[r][v] = _mm256_setzero_si256();
    for (int64_t i = k0; i < k1; i += 2) {
      const uint8_t* w = panel + (i / 2) * NV * 32;
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32));
      for (int r = 0; r < R; ++r) {
        int16_t pair;
        std::memcpy(&pair, op.q + (m0 + r) * k + i, sizeof(pair));
        const __m256i x = _mm256_set1_epi16(pair);
        acc16[r][0] = _mm256_add_epi16(acc16[r][0], _mm256_maddubs_epi16(w0, x));
        acc16[r][1] = _mm256_add_epi16(acc16[r][1], _mm256_maddubs_epi16(w1, x));
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) {
        int32_t* a = acc[r] + 16 * v;
        const __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc16[r][v]));
        const __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc16[r][v], 1));
        _mm256_store_si256(reinterpret_cast<__m256i*>(a), _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(a)), lo));
        _mm256_store_si256(reinterpret_cast<__m256i*>(a + 8), _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(a + 8)), hi));
      }
  }
  for (int r = 0; r < R; ++r) {
    const int64_t m = m0 + r;
    const __m256i q_sum = _mm256_set1_epi32(op.q_sum[m]);
    const __m256 scale = _mm256_set1_ps(op.dequant[m] * op.w_scale);
    for (int64_t j = 0; j < PANEL; j += 8) {
      const __m256i dot = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc[r] + j)), q_sum);
      _mm256_storeu_ps(op.y + m * op.n_out + n0 + j, _mm256_mul_ps(_mm256_cvtepi32_ps(dot), scale));
    }
  }
}

template <int R>
void finish_rows(const Operands& op, const uint8_t* panel, int64_t m0, int64_t rows, int64_t n0) {
  if constexpr (R > 0) {
    if (rows == R) panel_tile<R>(op, panel, m0, n0);
    else finish_rows<R - 1>(op, panel, m0, rows, n0);
  }
}

at::Tensor bitlinear(const at::Tensor& x, const at::Tensor& gain, double eps, const at::Tensor& packed,
                     double w_scale) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "ternary bitlinear: x must be contiguous float32 (M, K)");
  const int64_t m_rows = x.size(0), k = x.size(1), n_out = packed.size(0);
  TORCH_CHECK(k % 32 == 0, "ternary bitlinear: in_features must be a multiple of 32, got ", k);
  TORCH_CHECK(n_out % PANEL == 0, "ternary bitlinear: out_features must be a multiple of 32, got ", n_out);
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kByte && packed.is_contiguous() &&
                  packed.size(1) == k / 4,
              "ternary bitlinear: packed weights must be contiguous uint8 (N, K/4)");
  TORCH_CHECK(gain.scalar_type() == at::kFloat && gain.is_contiguous() && gain.numel() == k,
              "ternary bitlinear: gain must be contiguous float32 (K,)");
  at::Tensor q = at::empty({m_rows, k}, x.options().dtype(at::kChar));
  at::Tensor q_sum = at::empty({m_rows}, x.options().dtype(at::kInt));
  at::Tensor dequant = at::empty({m_rows}, x.options());
  at::Tensor y = at::empty({m_rows, n_out}, x.options());
  Operands op{q.data_ptr<int8_t>(), q_sum.data_ptr<int32_t>(), dequant.data_ptr<float>(), k, n_out,
              static_cast<float>(w_scale), y.data_ptr<float>()};
  const float* xp = x.data_ptr<float>();
  const float* gp = gain.data_ptr<float>();
  at::parallel_for(0, m_rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      norm_quantize_row(xp + r * k, gp, k, static_cast<float>(eps), q.data_ptr<int8_t>() + r * k,
                        q_sum.data_ptr<int32_t>() + r, dequant.data_ptr<float>() + r);
  });
  const uint8_t* wp = packed.data_ptr<uint8_t>();
  const int64_t m_full = m_rows / MR * MR;
  // threads split the outputs by panels; each unpacks its panel once (into L1) and streams every token past it
  at::parallel_for(0, n_out / PANEL, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> storage(PANEL * k + 32);
    uint8_t* panel = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(storage.data()) + 31) & ~uintptr_t(31));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n0 = t * PANEL;
      unpack_panel(wp + n0 * (k / 4), k, panel);
      for (int64_t m0 = 0; m0 < m_full; m0 += MR) panel_tile<MR>(op, panel, m0, n0);
      finish_rows<MR - 1>(op, panel, m_full, m_rows - m_full, n0);
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY(slimdrive_ternary, m) {
  m.def("bitlinear(Tensor x, Tensor gain, float eps, Tensor packed, float w_scale) -> Tensor", &bitlinear);
}
"""

_loaded = False


def kernel_dir() -> Path:
    """Where the compiled kernel is cached (``$SLIMDRIVE_KERNEL_DIR`` or a per-user folder in the temp dir)."""
    default = Path(tempfile.gettempdir()) / f"slimdrive-kernels-{os.getuid()}"
    return Path(os.environ.get("SLIMDRIVE_KERNEL_DIR", default))


def load_kernel() -> None:
    """Compile (first time only) and register ``torch.ops.slimdrive_ternary.bitlinear``."""
    global _loaded
    if _loaded:
        return
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        raise RuntimeError(
            f"packed ternary runtime: the kernel needs an x86-64 CPU with AVX2, this one reports {capability!r}; "
            "run the fake-quant graph instead (load the weights with agent.export.load_packed(..., runtime=False))"
        )
    from torch.utils.cpp_extension import load

    digest = hashlib.sha256(_KERNEL_SOURCE.encode()).hexdigest()[:12]
    build_dir = kernel_dir() / digest
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / "ternary_kernel.cpp"
    if not source.exists() or source.read_text() != _KERNEL_SOURCE:
        source.write_text(_KERNEL_SOURCE)
    # -fopenmp compiles at::parallel_for into OpenMP regions; the library resolves to torch's own libgomp
    load(
        name=f"slimdrive_ternary_{digest}",
        sources=[str(source)],
        extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir),
        is_python_module=False,
    )
    _loaded = True


class PackedBitLinear(nn.Module):
    """Inference-only BitLinear on packed weights: ``packed`` uint8 (out, in / 4), ``w_scale`` = mean|W|."""

    def __init__(self, norm_weight: torch.Tensor, norm_eps: float, packed: torch.Tensor, w_scale: float) -> None:
        super().__init__()
        self.in_features = packed.shape[1] * 4
        self.out_features = packed.shape[0]
        self.norm_eps = norm_eps
        self.w_scale = w_scale
        self.register_buffer("norm_weight", norm_weight.to(torch.float32).contiguous())
        self.register_buffer("packed", packed.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.float32).contiguous()
        y = torch.ops.slimdrive_ternary.bitlinear(flat, self.norm_weight, self.norm_eps, self.packed, self.w_scale)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, packed ternary"


def to_runtime(net: DrivingNet, packed: dict[str, tuple[torch.Tensor, float]]) -> DrivingNet:
    """Swap every `BitLinear` of ``net`` for a `PackedBitLinear` in place and return ``net``.

    ``packed`` maps a BitLinear's module name to ``(packed codes (out, in / 4) uint8, mean|W|)``; its latent
    float weight is dropped, so only the packed codes stay resident.
    """
    load_kernel()
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
