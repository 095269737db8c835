// CUDA kernels of stylert_kernels.h: device memory, asynchronous on the given stream.
// Element-wise formulas come from kernels_common.h, shared with the CPU reference.
#include "stylert_kernels.h"
#include "kernels_common.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <stddef.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

int blocks_for(size_t n) {
    size_t b = (n + kThreads - 1) / kThreads;
    return static_cast<int>(b < 65535 * 8 ? b : 65535 * 8);
}

int status(cudaStream_t) { return cudaGetLastError() == cudaSuccess ? STYLERT_OK : STYLERT_CUDA_ERROR; }

template <typename T>
__global__ void modulate_kernel(const T* x, const float* s, T* out, size_t n, int pixels) {
    for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x)
        out[i] = from_f<T>(to_f(x[i]) * s[i / pixels]);
}

// One warp per (b, o): d = rsqrt(sum_i s[b,i]^2 wsq[i,o] + eps).
__global__ void demod_kernel(const float* s, const float* wsq, float* d, int B, int I, int O, float eps) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (warp >= B * O) return;
    int b = warp / O, o = warp % O;
    float acc = 0.0f;
    for (int i = lane; i < I; i += 32) {
        float v = s[b * I + i];
        acc += v * v * wsq[i * O + o];
    }
    for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xffffffff, acc, off);
    if (lane == 0) d[b * O + o] = rsqrtf(acc + eps);
}

template <typename T>
__global__ void epilogue_kernel(T* y, const float* d, const float* noise, const float* bias, size_t n, int C, int P,
                                int lrelu, float gain, float clamp) {
    for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        size_t bc = i / P;
        int c = static_cast<int>(bc % C), p = static_cast<int>(i % P);
        y[i] = from_f<T>(stylert_epilogue(to_f(y[i]), d ? d[bc] : 1.0f, noise ? noise[p] : 0.0f, bias[c], lrelu, gain,
                                          clamp));
    }
}

template <typename T>
__global__ void blend_kernel(const T* fs, const T* fi, const T* ms, const T* mc, T* out, size_t n, int C, int P) {
    for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        size_t bc = i / P, b = bc / C;
        out[i] = from_f<T>(stylert_blend(to_f(fs[i]), to_f(fi[i]), to_f(ms[b * P + i % P]), to_f(mc[bc])));
    }
}

bool bad(int B, int C, int P) { return B <= 0 || C <= 0 || P <= 0; }

// wsq[i,o] = sum_k w[o,i,k]^2, one thread per (i, o).
__global__ void weight_sq_kernel(const float* w, float* wsq, int I, int O, int kk) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= I * O) return;
    int i = n / O, o = n % O;
    const float* p = w + (static_cast<size_t>(o) * I + i) * kk;
    float acc = 0.0f;
    for (int t = 0; t < kk; ++t) acc += p[t] * p[t];
    wsq[n] = acc;
}

// up = 1: one thread per output element; modulation on load, epilogue on store.
template <typename T>
__global__ void conv_kernel(const T* x, const float* s, const float* w, const float* d, const float* noise,
                            const float* bias, T* out, StylertConvShape sh, int lrelu, float gain, float clamp) {
    const int Ho = sh.out_h(), Wo = sh.out_w(), k = sh.k;
    size_t n = static_cast<size_t>(sh.B) * sh.O * Ho * Wo;
    for (size_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
        int xx = static_cast<int>(idx % Wo), y = static_cast<int>((idx / Wo) % Ho);
        int o = static_cast<int>((idx / (static_cast<size_t>(Wo) * Ho)) % sh.O), b = static_cast<int>(idx / (static_cast<size_t>(Wo) * Ho * sh.O));
        float acc = 0.0f;
        for (int i = 0; i < sh.I; ++i) {
            const T* xp = x + (static_cast<size_t>(b) * sh.I + i) * sh.H * sh.W;
            const float* wp = w + (static_cast<size_t>(o) * sh.I + i) * k * k;
            float part = 0.0f;
            for (int ky = 0; ky < k; ++ky) {
                int iy = y + ky - sh.pad;
                if (iy < 0 || iy >= sh.H) continue;
                for (int kx = 0; kx < k; ++kx) {
                    int ix = xx + kx - sh.pad;
                    if (ix >= 0 && ix < sh.W) part += to_f(xp[iy * sh.W + ix]) * wp[ky * k + kx];
                }
            }
            acc += s[b * sh.I + i] * part;
        }
        out[idx] = from_f<T>(stylert_epilogue(acc, d ? d[b * sh.O + o] : 1.0f, noise ? noise[y * Wo + xx] : 0.0f,
                                              bias[o], lrelu, gain, clamp));
    }
}

// up = 2, first pass: stride-2 transposed conv into float32 `mid`, modulation on load.
template <typename T>
__global__ void transposed_conv_kernel(const T* x, const float* s, const float* w, float* mid, StylertConvShape sh) {
    const int Hm = sh.mid_h(), Wm = sh.mid_w(), k = sh.k;
    size_t n = static_cast<size_t>(sh.B) * sh.O * Hm * Wm;
    for (size_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
        int X = static_cast<int>(idx % Wm), Y = static_cast<int>((idx / Wm) % Hm);
        int o = static_cast<int>((idx / (static_cast<size_t>(Wm) * Hm)) % sh.O), b = static_cast<int>(idx / (static_cast<size_t>(Wm) * Hm * sh.O));
        float acc = 0.0f;
        for (int i = 0; i < sh.I; ++i) {
            const T* xp = x + (static_cast<size_t>(b) * sh.I + i) * sh.H * sh.W;
            const float* wp = w + (static_cast<size_t>(o) * sh.I + i) * k * k;
            float part = 0.0f;
            for (int ky = (Y & 1); ky < k; ky += 2) {
                int iy = (Y - ky) / 2;
                if (Y < ky || iy >= sh.H) continue;
                for (int kx = (X & 1); kx < k; kx += 2) {
                    int ix = (X - kx) / 2;
                    if (X >= kx && ix < sh.W) part += to_f(xp[iy * sh.W + ix]) * wp[ky * k + kx];
                }
            }
            acc += s[b * sh.I + i] * part;
        }
        mid[idx] = acc;
    }
}

// up = 2, second pass: the FIR (gain 4) with the epilogue on store.
template <typename T>
__global__ void fir_kernel(const float* mid, const float* filt, const float* d, const float* noise, const float* bias,
                           T* out, StylertConvShape sh, int lrelu, float gain, float clamp) {
    const int Ho = sh.out_h(), Wo = sh.out_w(), Hm = sh.mid_h(), Wm = sh.mid_w(), f = sh.f, p0 = sh.fir_p0();
    size_t n = static_cast<size_t>(sh.B) * sh.O * Ho * Wo;
    for (size_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
        int xx = static_cast<int>(idx % Wo), y = static_cast<int>((idx / Wo) % Ho);
        size_t bo = idx / (static_cast<size_t>(Wo) * Ho);
        const float* m = mid + bo * Hm * Wm;
        float acc = 0.0f;
        for (int fy = 0; fy < f; ++fy) {
            int my = y + fy - p0;
            if (my < 0 || my >= Hm) continue;
            for (int fx = 0; fx < f; ++fx) {
                int mx = xx + fx - p0;
                if (mx >= 0 && mx < Wm) acc += m[my * Wm + mx] * 4.0f * filt[(f - 1 - fy) * f + (f - 1 - fx)];
            }
        }
        int o = static_cast<int>(bo % sh.O);
        out[idx] = from_f<T>(stylert_epilogue(acc, d ? d[bo] : 1.0f, noise ? noise[y * Wo + xx] : 0.0f, bias[o],
                                              lrelu, gain, clamp));
    }
}

__global__ void half_to_float_kernel(const __half* src, float* dst, size_t n) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x)
        dst[i] = __half2float(src[i]);
}

// Tensor-core fused modulated conv: an implicit GEMM (M = output positions of one phase and image, N = output
// channels, K = taps x input channels) on WMMA 16x16x16 tiles, fp16 operands, fp32 accumulation. A block computes
// 64 positions x BN channels (64, or 32 where O <= 32: the 1024^2 and toRGB layers) with 4 warps of 32 x BN/2,
// stepping K by 32 through two shared-memory stages: the next step's tiles are loaded into registers while the
// tensor cores work on the current one (one barrier per step). Modulation is applied as the input tile is staged
// (x * s in fp32, stored fp16, zero outside the image and past I); the prepared weights are read as whole
// zero-padded tiles; the epilogue (d, noise, bias, lrelu x gain, clamp) runs on the fp32 accumulators.
constexpr int kFusedM = 64, kFusedK = STYLERT_FUSED_TILE_K, kFusedThreads = 128, kLdA = kFusedK + 8;
static_assert(kFusedThreads == 2 * kFusedM && kFusedK == 2 * 16, "staging: 16 channels of one position a thread");
static_assert(STYLERT_FUSED_TILE_N % 64 == 0, "prepared rows hold whole 64- and 32-channel tiles");

template <int BN>
struct FusedTile {
    static constexpr int ldb = BN + 8, ldc = BN + 4;  // padded rows: fewer bank conflicts
    static constexpr int wloads = kFusedK * BN / 8 / kFusedThreads;  // 16-byte weight loads a thread per step
    static constexpr int frags = BN / 32;  // accumulator fragments of a warp along N
    static_assert(wloads * 8 * kFusedThreads == kFusedK * BN, "staging: whole 16-byte weight loads");
    union Smem {
        struct {
            __half a[2][kFusedM * kLdA];  // [stage][position][channel]
            __half b[2][kFusedK * ldb];   // [stage][channel][output channel]
        } ab;
        float c[kFusedM * ldc];  // accumulators, for the epilogue
    };
};

// One step's tiles in registers, as loaded: 16 channels of one position and their styles (this thread's part of
// the input tile), and its 16-byte parts of the weight tile.
template <typename T, int BN>
struct FusedRegs {
    alignas(16) T x[16];
    alignas(16) float s[16];
    uint4 w[FusedTile<BN>::wloads];
};

template <typename T, int BN>
__device__ __forceinline__ void fused_fetch(FusedRegs<T, BN>& r, const T* __restrict__ x, const float* __restrict__ sn,
                                            const __half* __restrict__ wp, const StylertFusedShape& g, int step,
                                            int n, int phase, int o0, int gy, int gx, bool row_ok, int cb, bool vec) {
    int i0;
    const long long pixel = row_ok ? stylert_fused_input(g, n, gy, gx, step, &i0) : -1;
    const bool inside = pixel >= 0;
    const int c0 = (row_ok ? i0 : 0) + cb;
    const T* xp = x + (inside ? pixel : 0);
    if (inside && vec && c0 + 16 <= g.L.I) {  // whole vectors: 16-byte loads
        constexpr int per = 16 / sizeof(T);
#pragma unroll
        for (int j = 0; j < 16 / per; ++j) reinterpret_cast<uint4*>(r.x)[j] = reinterpret_cast<const uint4*>(xp + c0)[j];
#pragma unroll
        for (int j = 0; j < 4; ++j) reinterpret_cast<float4*>(r.s)[j] = reinterpret_cast<const float4*>(sn + c0)[j];
    } else {
#pragma unroll
        for (int e = 0; e < 16; ++e) {
            const bool ok = inside && c0 + e < g.L.I;
            r.x[e] = ok ? xp[c0 + e] : from_f<T>(0.0f);
            r.s[e] = ok ? sn[c0 + e] : 0.0f;
        }
    }
    const __half* wt = wp + stylert_fused_weights(g.L, phase, step, o0);
#pragma unroll
    for (int j = 0; j < FusedTile<BN>::wloads; ++j) {  // weights: always whole tiles
        const int q = threadIdx.x + j * kFusedThreads, row = q / (BN / 8), col = (q % (BN / 8)) * 8;
        r.w[j] = *reinterpret_cast<const uint4*>(wt + static_cast<size_t>(row) * g.L.o_pad + col);
    }
}

template <typename T, int BN>
__device__ __forceinline__ void fused_put(const FusedRegs<T, BN>& r, typename FusedTile<BN>::Smem& sm, int stage,
                                          int row, int cb) {
    alignas(16) __half2 h[8];
#pragma unroll
    for (int e = 0; e < 8; ++e)
        h[e] = __floats2half2_rn(to_f(r.x[2 * e]) * r.s[2 * e], to_f(r.x[2 * e + 1]) * r.s[2 * e + 1]);
    uint4* dst = reinterpret_cast<uint4*>(&sm.ab.a[stage][row * kLdA + cb]);
    dst[0] = reinterpret_cast<const uint4*>(h)[0];
    dst[1] = reinterpret_cast<const uint4*>(h)[1];
#pragma unroll
    for (int j = 0; j < FusedTile<BN>::wloads; ++j) {
        const int q = threadIdx.x + j * kFusedThreads, wrow = q / (BN / 8), col = (q % (BN / 8)) * 8;
        *reinterpret_cast<uint4*>(&sm.ab.b[stage][wrow * FusedTile<BN>::ldb + col]) = r.w[j];
    }
}

// vec: I % 8 == 0 and x, styles 16-byte aligned, so a thread's 16 channels are whole vectors. At most 128
// registers a thread, so that 4 blocks fit an SM.
template <typename T, int BN>
__global__ void __launch_bounds__(kFusedThreads, 4)
fused_conv_kernel(const T* __restrict__ x, const float* __restrict__ s, const __half* __restrict__ wp,
                  const float* __restrict__ d, const float* __restrict__ noise, const float* __restrict__ bias,
                  T* __restrict__ out, StylertFusedShape g, int vec, int lrelu, float gain, float clamp) {
    using namespace nvcuda;
    using Tile = FusedTile<BN>;
    __shared__ __align__(128) typename Tile::Smem sm;
    const StylertFusedLayer& L = g.L;
    const int tid = threadIdx.x, warp = tid / 32;
    const int n = blockIdx.z / L.phases, phase = blockIdx.z % L.phases;
    const int m0 = blockIdx.x * kFusedM, o0 = blockIdx.y * BN, positions = g.grid_h * g.grid_w;
    const int row = tid / 2, cb = (tid % 2) * 16, m = m0 + row;  // this thread's position and 16 channels
    const bool row_ok = m < positions;
    const int gy = row_ok ? m / g.grid_w : 0, gx = row_ok ? m % g.grid_w : 0;
    const float* sn = s + static_cast<size_t>(n) * L.I;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * (BN / 2), steps = stylert_fused_steps(L);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][Tile::frags];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < Tile::frags; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    FusedRegs<T, BN> r;
    fused_fetch(r, x, sn, wp, g, 0, n, phase, o0, gy, gx, row_ok, cb, vec);
    fused_put<T, BN>(r, sm, 0, row, cb);
    __syncthreads();
    for (int step = 0; step < steps; ++step) {
        const int cur = step & 1;
        if (step + 1 < steps) fused_fetch(r, x, sn, wp, g, step + 1, n, phase, o0, gy, gx, row_ok, cb, vec);
#pragma unroll
        for (int kk = 0; kk < kFusedK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb[Tile::frags];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &sm.ab.a[cur][(wm + 16 * i) * kLdA + kk], kLdA);
#pragma unroll
            for (int j = 0; j < Tile::frags; ++j)
                wmma::load_matrix_sync(fb[j], &sm.ab.b[cur][kk * Tile::ldb + wn + 16 * j], Tile::ldb);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < Tile::frags; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        // the other stage was last read in the previous step, which every warp finished before this one began
        if (step + 1 < steps) fused_put<T, BN>(r, sm, cur ^ 1, row, cb);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < Tile::frags; ++j)
            wmma::store_matrix_sync(&sm.c[(wm + 16 * i) * Tile::ldc + wn + 16 * j], acc[i][j], Tile::ldc,
                                    wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < kFusedM * BN; e += kFusedThreads) {  // consecutive threads: consecutive channels
        const int tr = e / BN, c = e % BN, mm = m0 + tr, o = o0 + c;
        if (mm >= positions || o >= L.O) continue;
        int oy, ox;
        stylert_fused_output(g, phase, mm, &oy, &ox);
        const float v = stylert_epilogue(sm.c[tr * Tile::ldc + c], d ? d[n * L.O + o] : 1.0f,
                                         noise ? noise[oy * g.out_w + ox] : 0.0f, bias[o], lrelu, gain, clamp);
        out[((static_cast<size_t>(n) * g.out_h + oy) * g.out_w + ox) * L.O + o] = from_f<T>(v);
    }
}

template <typename T, int BN>
void fused_launch(const void* x, const float* s, const __half* wp, const float* d, const float* bias,
                  const float* noise, void* out, const StylertFusedShape& g, bool vec, int lrelu, float gain,
                  float clamp, cudaStream_t st) {
    dim3 grid((g.grid_h * g.grid_w + kFusedM - 1) / kFusedM, (g.L.O + BN - 1) / BN, g.B * g.L.phases);
    fused_conv_kernel<T, BN><<<grid, kFusedThreads, 0, st>>>(static_cast<const T*>(x), s, wp, d, noise, bias,
                                                              static_cast<T*>(out), g, vec, lrelu, gain, clamp);
}

template <typename T>
int fused_modconv(const void* x, const float* s, const void* prepared, const float* bias, const float* noise,
                  void* out, float* d, const StylertFusedShape& g, int demod, int lrelu, float gain, float clamp,
                  cudaStream_t st) {
    const StylertFusedLayer& L = g.L;
    const float* wsq = static_cast<const float*>(prepared);
    const __half* wp = reinterpret_cast<const __half*>(static_cast<const unsigned char*>(prepared) +
                                                       stylert_fused_wsq_bytes(L));
    if (demod) {
        size_t threads = static_cast<size_t>(g.B) * L.O * 32;
        demod_kernel<<<static_cast<int>((threads + kThreads - 1) / kThreads), kThreads, 0, st>>>(
            s, wsq, d, g.B, L.I, L.O, STYLERT_DEMOD_EPS);
    }
    const bool vec = L.I % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(s) % 16 == 0;
    if (L.O <= 32)  // a 64-channel tile would be half padding
        fused_launch<T, 32>(x, s, wp, demod ? d : nullptr, bias, noise, out, g, vec, lrelu, gain, clamp, st);
    else
        fused_launch<T, 64>(x, s, wp, demod ? d : nullptr, bias, noise, out, g, vec, lrelu, gain, clamp, st);
    return status(st);
}

template <typename T>
int modconv(const void* x, const float* s, const float* w, const float* bias, const float* noise, const float* filt,
            void* out, float* ws, const StylertConvShape& sh, int demod, int lrelu, float gain, float clamp,
            cudaStream_t st) {
    float* wsq = ws;
    float* d = ws + static_cast<size_t>(sh.I) * sh.O;
    float* mid = d + static_cast<size_t>(sh.B) * sh.O;
    if (demod) {
        weight_sq_kernel<<<(sh.I * sh.O + kThreads - 1) / kThreads, kThreads, 0, st>>>(w, wsq, sh.I, sh.O, sh.k * sh.k);
        size_t threads = static_cast<size_t>(sh.B) * sh.O * 32;
        demod_kernel<<<static_cast<int>((threads + kThreads - 1) / kThreads), kThreads, 0, st>>>(
            s, wsq, d, sh.B, sh.I, sh.O, STYLERT_DEMOD_EPS);
    }
    const float* dd = demod ? d : nullptr;
    size_t n_out = static_cast<size_t>(sh.B) * sh.O * sh.out_h() * sh.out_w();
    if (sh.up == 1) {
        conv_kernel<T><<<blocks_for(n_out), kThreads, 0, st>>>(static_cast<const T*>(x), s, w, dd, noise, bias,
                                                               static_cast<T*>(out), sh, lrelu, gain, clamp);
    } else {
        StylertConvShape one = sh;  // one sample at a time through the bounded intermediate
        one.B = 1;
        size_t n_mid = static_cast<size_t>(sh.O) * sh.mid_h() * sh.mid_w(), n_one = n_out / sh.B;
        size_t x_step = static_cast<size_t>(sh.I) * sh.H * sh.W;
        for (int b = 0; b < sh.B; ++b) {
            transposed_conv_kernel<T><<<blocks_for(n_mid), kThreads, 0, st>>>(
                static_cast<const T*>(x) + b * x_step, s + static_cast<size_t>(b) * sh.I, w, mid, one);
            fir_kernel<T><<<blocks_for(n_one), kThreads, 0, st>>>(mid, filt, dd ? dd + static_cast<size_t>(b) * sh.O : nullptr,
                                                                  noise, bias, static_cast<T*>(out) + b * n_one, one,
                                                                  lrelu, gain, clamp);
        }
    }
    return status(st);
}

}  // namespace

extern "C" {

int stylert_modulate(const void* x, const float* styles, void* out, int B, int C, int P, stylert_dtype dtype,
                     stylert_stream stream) {
    if (!x || !styles || !out || bad(B, C, P)) return STYLERT_BAD_ARGUMENT;
    size_t n = static_cast<size_t>(B) * C * P;
    auto st = static_cast<cudaStream_t>(stream);
    if (dtype == STYLERT_F16)
        modulate_kernel<<<blocks_for(n), kThreads, 0, st>>>(static_cast<const __half*>(x), styles, static_cast<__half*>(out), n, P);
    else
        modulate_kernel<<<blocks_for(n), kThreads, 0, st>>>(static_cast<const float*>(x), styles, static_cast<float*>(out), n, P);
    return status(st);
}

int stylert_demod_coefficients(const float* s, const float* wsq, float* d, int B, int I, int O, float eps,
                               stylert_stream stream) {
    if (!s || !wsq || !d || bad(B, I, O)) return STYLERT_BAD_ARGUMENT;
    auto st = static_cast<cudaStream_t>(stream);
    size_t threads = static_cast<size_t>(B) * O * 32;
    demod_kernel<<<static_cast<int>((threads + kThreads - 1) / kThreads), kThreads, 0, st>>>(s, wsq, d, B, I, O, eps);
    return status(st);
}

int stylert_demod_bias_act(void* y, const float* d, const float* noise, const float* bias, int B, int C, int P,
                           int lrelu, float gain, float clamp, stylert_dtype dtype, stylert_stream stream) {
    if (!y || !bias || bad(B, C, P)) return STYLERT_BAD_ARGUMENT;
    size_t n = static_cast<size_t>(B) * C * P;
    auto st = static_cast<cudaStream_t>(stream);
    if (dtype == STYLERT_F16)
        epilogue_kernel<<<blocks_for(n), kThreads, 0, st>>>(static_cast<__half*>(y), d, noise, bias, n, C, P, lrelu, gain, clamp);
    else
        epilogue_kernel<<<blocks_for(n), kThreads, 0, st>>>(static_cast<float*>(y), d, noise, bias, n, C, P, lrelu, gain, clamp);
    return status(st);
}

int stylert_bafs_blend(const void* fs, const void* fi, const void* ms, const void* mc, void* out, int B, int C, int P,
                       stylert_dtype dtype, stylert_stream stream) {
    if (!fs || !fi || !ms || !mc || !out || bad(B, C, P)) return STYLERT_BAD_ARGUMENT;
    size_t n = static_cast<size_t>(B) * C * P;
    auto st = static_cast<cudaStream_t>(stream);
    if (dtype == STYLERT_F16)
        blend_kernel<<<blocks_for(n), kThreads, 0, st>>>(static_cast<const __half*>(fs), static_cast<const __half*>(fi),
            static_cast<const __half*>(ms), static_cast<const __half*>(mc), static_cast<__half*>(out), n, C, P);
    else
        blend_kernel<<<blocks_for(n), kThreads, 0, st>>>(static_cast<const float*>(fs), static_cast<const float*>(fi),
            static_cast<const float*>(ms), static_cast<const float*>(mc), static_cast<float*>(out), n, C, P);
    return status(st);
}

STYLERT_DEFINE_GEOMETRY

int stylert_half_to_float(const void* src, float* dst, size_t count, stylert_stream stream) {
    if (!src || !dst) return STYLERT_BAD_ARGUMENT;
    auto st = static_cast<cudaStream_t>(stream);
    if (count) half_to_float_kernel<<<blocks_for(count), kThreads, 0, st>>>(static_cast<const __half*>(src), dst, count);
    return status(st);
}

int stylert_modulated_conv2d(const void* x, const float* styles, const float* weight, const float* bias,
                             const float* noise, const float* filter, void* out, void* workspace, int B, int I, int O,
                             int H, int W, int k, int up, int pad, int f, int demodulate, int lrelu, float gain,
                             float clamp, stylert_dtype dtype, stylert_stream stream) {
    StylertConvShape sh{B, I, O, H, W, k, up, pad, up == 2 ? f : 1};
    if (!x || !styles || !weight || !bias || !out || !workspace || !sh.valid() || (up == 2 && !filter))
        return STYLERT_BAD_ARGUMENT;
    auto st = static_cast<cudaStream_t>(stream);
    float* ws = static_cast<float*>(workspace);
    return dtype == STYLERT_F16
               ? modconv<__half>(x, styles, weight, bias, noise, filter, out, ws, sh, demodulate, lrelu, gain, clamp, st)
               : modconv<float>(x, styles, weight, bias, noise, filter, out, ws, sh, demodulate, lrelu, gain, clamp, st);
}

STYLERT_DEFINE_FUSED_HOST

int stylert_fused_modulated_conv2d(const void* x, const float* styles, const void* prepared, const float* bias,
                                   const float* noise, void* out, void* workspace, int B, int I, int O, int H, int W,
                                   int k, int up, int pad, int f, int demodulate, int lrelu, float gain, float clamp,
                                   stylert_dtype dtype, stylert_stream stream) {
    StylertFusedShape g;
    if (!x || !styles || !prepared || !bias || !out || (demodulate && !workspace) ||
        !stylert_fused_shape(B, I, O, H, W, k, up, pad, f, &g) || (dtype != STYLERT_F32 && dtype != STYLERT_F16) ||
        reinterpret_cast<uintptr_t>(prepared) % 16 != 0)
        return STYLERT_BAD_ARGUMENT;
    auto st = static_cast<cudaStream_t>(stream);
    float* d = static_cast<float*>(workspace);
    return dtype == STYLERT_F16
               ? fused_modconv<__half>(x, styles, prepared, bias, noise, out, d, g, demodulate, lrelu, gain, clamp, st)
               : fused_modconv<float>(x, styles, prepared, bias, noise, out, d, g, demodulate, lrelu, gain, clamp, st);
}

}  // extern "C"
