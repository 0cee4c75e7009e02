// slimdrive packed runtime: RMSNorm + int8 activations x 2-bit ternary weights, x86-64 with AVX2 or AVX-512 VNNI.
//
// y[m, n] = sum_k q[m, k] * w[n, k] * dequant[m] * w_scale, with q = round(rmsnorm(x) * 127 / max|.|) per
// token and w in {-1, 0, +1}. vpmaddubsw (vpdpbusd) multiplies unsigned codes c = w + 1 in {0, 1, 2} by the
// signed activations; subtracting sum_k q[m, k] once per token gives sum_k w q exactly: sum((w + 1) q) - sum(q).
//
// Weight layout (`relayout` in agent/runtime.py builds it once at load time; still 2 bits per weight):
// outputs in groups of 8 ("octs"), inputs in chunks of 16. One 32-byte block per (oct, chunk); bits 2s..2s+1
// of byte 4o + j hold the code of output 8g + o, input 16t + 4s + j. So `(block >> 2s) & 3` is, for the four
// inputs 4(4t + s) .. +3, the codes of the oct's 8 outputs, four consecutive bytes per output: exactly what
// vpmaddubsw and vpdpbusd need against one broadcast 32-bit group of four activations. With vpmaddubsw the
// int16 pair sums of output o sit in lanes 2o and 2o + 1, and vpmaddwd with ones adds them into int32 lane o;
// vpdpbusd adds all four products into int32 lane o itself.
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <immintrin.h>
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

#if defined(__AVX512VNNI__)
// AVX-512 VNNI: vpdpbusd multiplies four codes by four activations and adds them into an int32 lane in one
// instruction (no int16 stage to flush); one zmm holds two octs (16 outputs): an 8 x 32 tile is 16 accumulators.
constexpr int MR = 8;                  // tokens per micro-tile
constexpr int NV = 4;                  // octs per micro-tile: 8 x 2 zmm int32 accumulators in registers
#else
// per step (4 inputs) an int16 lane adds one pair sum in [-512, 508]; 32 steps stay within +-16384
constexpr int64_t KFLUSH = 128;
constexpr int MR = 4;                  // tokens per micro-tile
constexpr int NV = 2;                  // octs per micro-tile: 4 x 2 int16 accumulators in registers
#endif
constexpr int64_t PANEL = 8 * NV;      // outputs per panel (unpacked once into L1, reused by every token)
constexpr int64_t MAX_K = 4096;

enum Epilogue : int64_t { kPlain = 0, kReluSquare = 1 };

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

// One token: RMSNorm with gain, then absmax quantization to int8 (round half to even, like torch.round: the
// conversion rounds in the default MXCSR mode). The norm's 1/rms folds into the quantization scale, so the row is
// read three times (squares, absmax of x * gain, codes) and each value is multiplied twice. No clamp is needed:
// |x * gain| <= absmax, so |code| <= 127 (a product that float rounding puts a hair above 127 converts to 127).
// k is a multiple of 32: 32 codes are packed and stored at a time.
void norm_quantize_row(const float* x, const float* gain, int64_t k, float eps, int8_t* q, int32_t* q_sum,
                       float* dequant) {
  __m256 sq0 = _mm256_setzero_ps(), sq1 = _mm256_setzero_ps();
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 amax0 = _mm256_setzero_ps(), amax1 = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    sq0 = _mm256_fmadd_ps(v0, v0, sq0);
    sq1 = _mm256_fmadd_ps(v1, v1, sq1);
    amax0 = _mm256_max_ps(amax0, _mm256_andnot_ps(sign_bit, _mm256_mul_ps(v0, _mm256_loadu_ps(gain + i))));
    amax1 = _mm256_max_ps(amax1, _mm256_andnot_ps(sign_bit, _mm256_mul_ps(v1, _mm256_loadu_ps(gain + i + 8))));
  }
  const float inv_rms = 1.0f / std::sqrt(hsum_ps(_mm256_add_ps(sq0, sq1)) / static_cast<float>(k) + eps);
  const float scale = 127.0f / std::max(hmax_ps(_mm256_max_ps(amax0, amax1)) * inv_rms, 1e-5f);
  const __m256 multiplier = _mm256_set1_ps(inv_rms * scale);
  // packs_epi32 / packs_epi16 interleave the two 128-bit lanes; this puts the four groups of 8 back in order
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i total = _mm256_setzero_si256();
  for (int64_t i = 0; i < k; i += 32) {
    __m256i c[4];
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), _mm256_loadu_ps(gain + i + 8 * j));
      c[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v, multiplier));
    }
    total = _mm256_add_epi32(total, _mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3])));
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(bytes, order));
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
  int64_t epilogue;
  const float* residual;  // nullptr or (M, N) float32 added to the result
  float* y;
};

// Unpack the PANEL outputs starting at oct g0 into one byte per code: panel[(kq * NV + v) * 32 + 4 o + j] is the
// code of output 8 (g0 + v) + o for input 4 kq + j.
void unpack_panel(const uint8_t* packed, int64_t k, int64_t g0, uint8_t* panel) {
  const int64_t chunks = k / 16;
  const __m256i mask = _mm256_set1_epi8(3);
  for (int v = 0; v < NV; ++v) {
    const uint8_t* src = packed + (g0 + v) * chunks * 32;
    for (int64_t t = 0; t < chunks; ++t) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + t * 32));
      for (int s = 0; s < 4; ++s) {
        const __m256i c = _mm256_and_si256(_mm256_srli_epi16(b, 2 * s), mask);
        _mm256_store_si256(reinterpret_cast<__m256i*>(panel + ((4 * t + s) * NV + v) * 32), c);
      }
    }
  }
}

// The tile's int32 totals (R tokens x PANEL outputs) -> float outputs: minus sum(q) per token (which turns
// sum((w + 1) q) into sum(w q)), both scales, then the optional epilogue and residual. One for both builds.
template <int R>
void store_tile(const Operands& op, const int32_t (*totals)[PANEL], int64_t m0, int64_t n0) {
  const __m256 zero = _mm256_setzero_ps();
  for (int r = 0; r < R; ++r) {
    const int64_t m = m0 + r;
    const __m256i q_sum = _mm256_set1_epi32(op.q_sum[m]);
    const __m256 scale = _mm256_set1_ps(op.dequant[m] * op.w_scale);
    for (int o = 0; o < PANEL; o += 8) {
      const int64_t at = m * op.n_out + n0 + o;
      const __m256i total = _mm256_load_si256(reinterpret_cast<const __m256i*>(totals[r] + o));
      __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(total, q_sum)), scale);
      if (op.epilogue == kReluSquare) {
        y = _mm256_max_ps(y, zero);
        y = _mm256_mul_ps(y, y);
      }
      if (op.residual) y = _mm256_add_ps(_mm256_loadu_ps(op.residual + at), y);
      _mm256_storeu_ps(op.y + at, y);
    }
  }
}

#if defined(__AVX512VNNI__)
template <int R>
void panel_tile(const Operands& op, const uint8_t* panel, int64_t m0, int64_t n0) {
  constexpr int Z = NV / 2;  // zmm per panel row
  const int64_t k = op.k;
  __m512i acc[R][Z];
  for (int r = 0; r < R; ++r)
    for (int z = 0; z < Z; ++z) acc[r][z] = _mm512_setzero_si512();
  const int8_t* qrow[R];
  for (int r = 0; r < R; ++r) qrow[r] = op.q + (m0 + r) * k;
  for (int64_t i = 0; i < k; i += 4) {
    const uint8_t* w = panel + (i / 4) * NV * 32;
    __m512i wv[Z];
    for (int z = 0; z < Z; ++z) wv[z] = _mm512_load_si512(w + 64 * z);
    for (int r = 0; r < R; ++r) {
      int32_t quad;
      std::memcpy(&quad, qrow[r] + i, sizeof(quad));
      const __m512i x = _mm512_set1_epi32(quad);
      for (int z = 0; z < Z; ++z) acc[r][z] = _mm512_dpbusd_epi32(acc[r][z], wv[z], x);
    }
  }
  alignas(64) int32_t totals[R][PANEL];
  for (int r = 0; r < R; ++r)
    for (int z = 0; z < Z; ++z) _mm512_store_si512(totals[r] + 16 * z, acc[r][z]);
  store_tile<R>(op, totals, m0, n0);
}
#else
template <int R>
void panel_tile(const Operands& op, const uint8_t* panel, int64_t m0, int64_t n0) {
  const int64_t k = op.k;
  // int32 totals live in L1, not in registers: all 16 ymm registers go to the inner loop
  alignas(32) int32_t acc[R][PANEL] = {};
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* qrow[R];
  for (int r = 0; r < R; ++r) qrow[r] = op.q + (m0 + r) * k;
  for (int64_t k0 = 0; k0 < k; k0 += KFLUSH) {
    const int64_t k1 = std::min(k, k0 + KFLUSH);
    __m256i acc16[R][NV];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc16[r][v] = _mm256_setzero_si256();
    for (int64_t i = k0; i < k1; i += 4) {
      const uint8_t* w = panel + (i / 4) * NV * 32;
      __m256i wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32 * v));
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        std::memcpy(&quad, qrow[r] + i, sizeof(quad));
        const __m256i x = _mm256_set1_epi32(quad);
        for (int v = 0; v < NV; ++v) acc16[r][v] = _mm256_add_epi16(acc16[r][v], _mm256_maddubs_epi16(wv[v], x));
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) {
        __m256i* a = reinterpret_cast<__m256i*>(acc[r] + 8 * v);
        _mm256_store_si256(a, _mm256_add_epi32(_mm256_load_si256(a), _mm256_madd_epi16(acc16[r][v], ones)));
      }
  }
  store_tile<R>(op, acc, m0, n0);
}
#endif

template <int R>
void finish_rows(const Operands& op, const uint8_t* panel, int64_t m0, int64_t rows, int64_t n0) {
  if constexpr (R > 0) {
    if (rows == R) panel_tile<R>(op, panel, m0, n0);
    else finish_rows<R - 1>(op, panel, m0, rows, n0);
  }
}

// x (..., K) float32 -> y (..., N) float32, every leading index a token; packed (N / 8, K / 16, 32) uint8 in the
// layout above. epilogue 1 applies relu(y)^2; residual (optional, float32 of y's shape) is added last:
// y = residual + f(x W^T). Taking and returning the caller's shape saves a layer call two reshapes.
at::Tensor bitlinear(const at::Tensor& x, const at::Tensor& gain, double eps, const at::Tensor& packed,
                     double w_scale, int64_t epilogue, const std::optional<at::Tensor>& residual) {
  TORCH_CHECK(x.dim() >= 1 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "ternary bitlinear: x must be contiguous float32 (..., K)");
  const int64_t k = x.size(-1), m_rows = k ? x.numel() / k : 0;
  TORCH_CHECK(k > 0 && k % 32 == 0 && k <= MAX_K, "ternary bitlinear: in_features must be a multiple of 32 up to ", MAX_K,
              ", got ", k);
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kByte && packed.is_contiguous() &&
                  packed.size(1) == k / 16 && packed.size(2) == 32,
              "ternary bitlinear: packed weights must be contiguous uint8 (N / 8, K / 16, 32) from relayout()");
  const int64_t n_out = packed.size(0) * 8;
  TORCH_CHECK(n_out % 32 == 0, "ternary bitlinear: out_features must be a multiple of 32, got ", n_out);
  TORCH_CHECK(gain.scalar_type() == at::kFloat && gain.is_contiguous() && gain.numel() == k,
              "ternary bitlinear: gain must be contiguous float32 (K,)");
  TORCH_CHECK(epilogue == kPlain || epilogue == kReluSquare, "ternary bitlinear: unknown epilogue ", epilogue);
  const float* res = nullptr;
  if (residual.has_value()) {
    const at::Tensor& r = *residual;
    TORCH_CHECK(r.scalar_type() == at::kFloat && r.is_contiguous() && r.dim() == x.dim() &&
                    r.numel() == m_rows * n_out && r.size(-1) == n_out,
                "ternary bitlinear: residual must be contiguous float32 of the output's shape (..., N)");
    res = r.data_ptr<float>();
  }
  // one scratch allocation per call: the int8 codes (M x K, K a multiple of 32 keeps what follows aligned), then
  // sum(q) and the dequantization factor per token
  at::Tensor scratch = at::empty({m_rows * (k + 8)}, x.options().dtype(at::kByte));
  int8_t* q = reinterpret_cast<int8_t*>(scratch.data_ptr<uint8_t>());
  int32_t* q_sum = reinterpret_cast<int32_t*>(q + m_rows * k);
  float* dequant = reinterpret_cast<float*>(q_sum + m_rows);
  std::vector<int64_t> y_shape(x.sizes().begin(), x.sizes().end());
  y_shape.back() = n_out;
  at::Tensor y = at::empty(y_shape, x.options());
  Operands op{q, q_sum, dequant, k, n_out,
              static_cast<float>(w_scale), epilogue, res, y.data_ptr<float>()};
  const float* xp = x.data_ptr<float>();
  const float* gp = gain.data_ptr<float>();
  const uint8_t* wp = packed.data_ptr<uint8_t>();
  const int64_t m_full = m_rows / MR * MR;
  const int64_t panels = n_out / PANEL;
  // One OpenMP region per call (torch's thread count): quantize the tokens, a barrier, then the threads split
  // the outputs by panels; each unpacks its panel once (into L1) and streams every token past it.
#pragma omp parallel num_threads(static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), panels))))
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m_rows; ++r)
      norm_quantize_row(xp + r * k, gp, k, static_cast<float>(eps), q + r * k, q_sum + r, dequant + r);
    alignas(64) uint8_t panel[PANEL * MAX_K];
#pragma omp for schedule(static)
    for (int64_t t = 0; t < panels; ++t) {
      const int64_t n0 = t * PANEL;
      unpack_panel(wp, k, t * NV, panel);
      for (int64_t m0 = 0; m0 < m_full; m0 += MR) panel_tile<MR>(op, panel, m0, n0);
      finish_rows<MR - 1>(op, panel, m_full, m_rows - m_full, n0);
    }
  }
  return y;
}

}  // namespace

TORCH_LIBRARY(slimdrive_ternary, m) {
  m.def("bitlinear(Tensor x, Tensor gain, float eps, Tensor packed, float w_scale, int epilogue=0, "
        "Tensor? residual=None) -> Tensor", &bitlinear);
}
