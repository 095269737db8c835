// Element-wise definitions shared by the CPU reference and the CUDA kernels, so both compute
// exactly the same formula; only the loops differ.
#pragma once
#include <math.h>

#if defined(__CUDACC__)
#define STYLERT_HD __host__ __device__ __forceinline__
#else
#define STYLERT_HD inline
#endif

STYLERT_HD float stylert_epilogue(float v, float d, float noise, float bias, int lrelu, float gain, float clamp) {
    v = v * d + noise + bias;
    if (lrelu) v = (v < 0.0f ? 0.2f * v : v) * gain;
    if (clamp >= 0.0f) v = fminf(fmaxf(v, -clamp), clamp);
    return v;
}

STYLERT_HD float stylert_blend(float fs, float fi, float ms, float mc) {
    return ms * mc * fs + (1.0f - ms) * (1.0f - mc) * fi;
}

// Geometry of the fused modulated conv, shared by both libraries and the plugins.
struct StylertConvShape {
    int B, I, O, H, W, k, up, pad, f;
    // transposed-conv output (up = 2) and the FIR's leading padding (NVlabs conv2d_resample)
    STYLERT_HD int mid_h() const { return up == 2 ? 2 * (H - 1) + k : H; }
    STYLERT_HD int mid_w() const { return up == 2 ? 2 * (W - 1) + k : W; }
    STYLERT_HD int fir_p0() const { return pad + (f + up - 1) / 2 - (k - 1); }
    STYLERT_HD int fir_p1() const { return pad + (f - up) / 2 - (k - up); }
    STYLERT_HD int out_h() const { return up == 2 ? mid_h() + fir_p0() + fir_p1() - f + 1 : H + 2 * pad - k + 1; }
    STYLERT_HD int out_w() const { return up == 2 ? mid_w() + fir_p0() + fir_p1() - f + 1 : W + 2 * pad - k + 1; }
    STYLERT_HD bool valid() const {
        return B > 0 && I > 0 && O > 0 && H > 0 && W > 0 && k > 0 && (up == 1 || (up == 2 && f > 0)) &&
               out_h() > 0 && out_w() > 0;
    }
};

// Workspace layout (float32): wsq [I*O] | d [B*O] | mid [O*mid_h*mid_w] (up = 2 only). The up = 2
// intermediate holds one sample: the batch runs through it one sample at a time, so the workspace
// does not grow with the batch (at most 32 x 1025^2 floats, 134 MB, at the 1024 layer of config F).
STYLERT_HD size_t stylert_workspace_floats(const StylertConvShape& s) {
    size_t mid = s.up == 2 ? static_cast<size_t>(s.O) * s.mid_h() * s.mid_w() : 0;
    return static_cast<size_t>(s.I) * s.O + static_cast<size_t>(s.B) * s.O + mid;
}

#define STYLERT_DEMOD_EPS 1e-8f

// IEEE binary16 <-> float32 in software (round to nearest even), so the CPU reference builds with
// compilers that lack _Float16 on x86 (GCC < 12) and gives the same bits as the hardware.
inline float stylert_half_to_float(unsigned short h) {
    unsigned int sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);  // inf, nan
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);  // normal: rebias 15 -> 127
    } else if (man == 0) {
        bits = sign;  // signed zero
    } else {  // subnormal: normalise
        int shift = 0;
        while (!(man & 0x400u)) { man <<= 1; ++shift; }
        bits = sign | ((113u - shift) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    __builtin_memcpy(&f, &bits, sizeof f);
    return f;
}

inline unsigned short stylert_float_to_half(float f) {
    unsigned int x;
    __builtin_memcpy(&x, &f, sizeof x);
    unsigned int sign = (x >> 16) & 0x8000u, absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return static_cast<unsigned short>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    if (absx >= 0x477ff000u) return static_cast<unsigned short>(sign | 0x7c00u);  // rounds past 65504: inf
    if (absx < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        if (absx < 0x33000001u) return static_cast<unsigned short>(sign);  // rounds to zero
        unsigned int exp = absx >> 23, man = (absx & 0x7fffffu) | 0x800000u, shift = 126 - exp;
        unsigned int half = man >> shift, rest = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1u))) ++half;
        return static_cast<unsigned short>(sign | half);
    }
    unsigned int half = ((absx >> 13) - (112u << 10)), rest = absx & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: correct
    return static_cast<unsigned short>(sign | half);
}

// The two geometry entry points of the C ABI, defined once for both libraries (each .cpp/.cu
// includes this header inside its extern "C" block through STYLERT_DEFINE_GEOMETRY).
#define STYLERT_DEFINE_GEOMETRY                                                                          \
    int stylert_modulated_conv2d_output_size(int size, int kernel, int up, int padding, int filter_size) { \
        StylertConvShape sh{1, 1, 1, size, size, kernel, up, padding, filter_size};                      \
        return sh.valid() ? sh.out_h() : -1;                                                             \
    }                                                                                                    \
    size_t stylert_modulated_conv2d_workspace(int B, int I, int O, int H, int W, int k, int up) {        \
        StylertConvShape sh{B, I, O, H, W, k, up, 0, 1};                                                 \
        return stylert_workspace_floats(sh) * sizeof(float);                                             \
    }

// Tensor-core fused modulated conv (stylert_fused_modulated_conv2d): tile sizes of its implicit GEMM, which
// also fix the padding of the prepared weights (the kernel reads whole K x N tiles without bounds checks).
#define STYLERT_FUSED_TILE_K 32  // input channels per step: i_pad is a multiple
#define STYLERT_FUSED_TILE_N 64  // output channels per block: o_pad is a multiple
#define STYLERT_FUSED_ALIGN 256  // bytes: the fp16 weights start at a multiple, after wsq

// A layer of the fused kernel: `phases` stride-1 convs of taps x taps on the input padded by pad_before /
// pad_after. up = 1: the layer's own conv (1 phase). up = 2: the 3x3 stride-2 transposed conv composed with the
// 4x4 FIR into K = 4 (W * f), split into 4 phase kernels G_ab[t] = K[2 (pad_before - t) + a + shift] writing
// pixels (2y + a, 2x + b) (ops.modconv.upsampling_phase_weights; phase index 2a + b).
struct StylertFusedLayer {
    int I, O, k, up, pad, f;
    int phases, taps, pad_before, pad_after, shift, i_pad, o_pad;
    bool valid;
};

inline int stylert_floor_half(int v) { return v >= 0 ? v / 2 : -((1 - v) / 2); }  // floor(v / 2)

inline StylertFusedLayer stylert_fused_layer(int I, int O, int k, int up, int pad, int f) {
    StylertFusedLayer L{I, O, k, up, pad, up == 2 ? f : 1, 1, k, pad, pad, 0, 0, 0, false};
    L.i_pad = (I + STYLERT_FUSED_TILE_K - 1) / STYLERT_FUSED_TILE_K * STYLERT_FUSED_TILE_K;
    L.o_pad = (O + STYLERT_FUSED_TILE_N - 1) / STYLERT_FUSED_TILE_N * STYLERT_FUSED_TILE_N;
    if (I <= 0 || O <= 0 || k <= 0 || pad < 0 || (up != 1 && up != 2)) return L;
    if (up == 2) {
        if (f <= 0) return L;
        StylertConvShape sh{1, 1, 1, 1, 1, k, 2, pad, f};
        const int p0 = sh.fir_p0(), p1 = sh.fir_p1(), length = k + f - 1;
        if (k + p0 + p1 - f - 1 != 0) return L;  // not a 2x upsampling layer (every StyleGAN2 up layer is one)
        L.phases = 4;
        L.shift = f - 1 - p0;
        const int lo = -stylert_floor_half(1 + L.shift) < -stylert_floor_half(L.shift) ? -stylert_floor_half(1 + L.shift)
                                                                                          : -stylert_floor_half(L.shift);
        const int h0 = stylert_floor_half(length - 1 - L.shift), h1 = stylert_floor_half(length - 2 - L.shift);
        const int hi = h0 > h1 ? h0 : h1;
        L.taps = hi - lo + 1;
        L.pad_before = hi;
        L.pad_after = -lo;
    }
    L.valid = L.taps > 0 && L.pad_before >= 0 && L.pad_after >= 0;
    return L;
}

// One call's geometry: the layer, the batch and input size, positions per phase and the output size (NHWC).
struct StylertFusedShape {
    StylertFusedLayer L;
    int B, H, W, grid_h, grid_w, out_h, out_w;
};

inline bool stylert_fused_shape(int B, int I, int O, int H, int W, int k, int up, int pad, int f, StylertFusedShape* g) {
    g->L = stylert_fused_layer(I, O, k, up, pad, f);
    g->B = B, g->H = H, g->W = W;
    g->grid_h = H + g->L.pad_before + g->L.pad_after - g->L.taps + 1;
    g->grid_w = W + g->L.pad_before + g->L.pad_after - g->L.taps + 1;
    g->out_h = up * g->grid_h, g->out_w = up * g->grid_w;
    return g->L.valid && B > 0 && H > 0 && W > 0 && g->grid_h > 0 && g->grid_w > 0 && B * g->L.phases <= 65535;
}

// The fused conv's addressing, shared by the CUDA kernel and its CPU reference so that the tests cover it. The
// GEMM's K runs through `steps` = taps^2 x i_pad / TILE_K steps, step = tap x (i_pad / TILE_K) + channel chunk.
STYLERT_HD int stylert_fused_steps(const StylertFusedLayer& L) { return L.taps * L.taps * (L.i_pad / STYLERT_FUSED_TILE_K); }

// Offset in x (NHWC) of channel 0 of the pixel that position (gy, gx) of image n reads at K step `step`, or -1
// where it lies in the zero padding; *i0 = the step's first channel.
STYLERT_HD long long stylert_fused_input(const StylertFusedShape& g, int n, int gy, int gx, int step, int* i0) {
    const int chunks = g.L.i_pad / STYLERT_FUSED_TILE_K, t = step / chunks;
    *i0 = (step - t * chunks) * STYLERT_FUSED_TILE_K;
    const int iy = gy + t / g.L.taps - g.L.pad_before, ix = gx + t % g.L.taps - g.L.pad_before;
    if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) return -1;
    return ((static_cast<long long>(n) * g.H + iy) * g.W + ix) * g.L.I;
}

// Offset in the prepared fp16 weights of the step's K x N tile of `phase` from output channel o0 (rows o_pad apart).
STYLERT_HD size_t stylert_fused_weights(const StylertFusedLayer& L, int phase, int step, int o0) {
    return (static_cast<size_t>(phase) * stylert_fused_steps(L) + step) * STYLERT_FUSED_TILE_K * L.o_pad + o0;
}

// Output pixel (oy, ox) that position m of `phase` writes: (up y + a, up x + b) for phase 2a + b.
STYLERT_HD void stylert_fused_output(const StylertFusedShape& g, int phase, int m, int* oy, int* ox) {
    *oy = g.L.up * (m / g.grid_w) + phase / 2;
    *ox = g.L.up * (m % g.grid_w) + phase % 2;
}

inline size_t stylert_fused_wsq_bytes(const StylertFusedLayer& L) {
    size_t bytes = static_cast<size_t>(L.I) * L.O * sizeof(float);
    return (bytes + STYLERT_FUSED_ALIGN - 1) / STYLERT_FUSED_ALIGN * STYLERT_FUSED_ALIGN;
}

// Prepared weights: wsq float32 [I][O] (demodulation), zero padding to STYLERT_FUSED_ALIGN, then fp16
// [phase][tap][i_pad][o_pad] (the GEMM's K x N operand, zero outside I x O).
inline size_t stylert_fused_prepared_bytes(const StylertFusedLayer& L) {
    return stylert_fused_wsq_bytes(L) +
           static_cast<size_t>(L.phases) * L.taps * L.taps * L.i_pad * L.o_pad * sizeof(unsigned short);
}

// Weight preparation, once per layer, on the host: wsq from the float32 weight, and the fp16 GEMM weights (up =
// 2: the phase kernels of K = 4 (W * f), composed in float64 and rounded once).
inline void stylert_fused_prepare(const StylertFusedLayer& L, const float* w, const float* filt, void* prepared) {
    const int I = L.I, O = L.O, k = L.k, T = L.taps, f = L.f, length = k + f - 1;
    unsigned char* bytes = static_cast<unsigned char*>(prepared);
    __builtin_memset(bytes, 0, stylert_fused_prepared_bytes(L));
    float* wsq = reinterpret_cast<float*>(bytes);
    unsigned short* wp = reinterpret_cast<unsigned short*>(bytes + stylert_fused_wsq_bytes(L));
    auto at = [&](int phase, int t, int i, int o) -> unsigned short& {
        return wp[((static_cast<size_t>(phase) * T * T + t) * L.i_pad + i) * L.o_pad + o];
    };
    double composed[16 * 16];  // K of one (o, i) pair, up = 2; k + f - 1 <= 16 checked by the caller
    for (int o = 0; o < O; ++o)
        for (int i = 0; i < I; ++i) {
            const float* wk = w + (static_cast<size_t>(o) * I + i) * k * k;
            float acc = 0.0f;
            for (int t = 0; t < k * k; ++t) acc += wk[t] * wk[t];
            wsq[static_cast<size_t>(i) * O + o] = acc;
            if (L.up == 1) {
                for (int t = 0; t < k * k; ++t) at(0, t, i, o) = stylert_float_to_half(wk[t]);
                continue;
            }
            for (int u = 0; u < length; ++u)  // K = 4 (W * f), a true (full) 2-D convolution
                for (int v = 0; v < length; ++v) {
                    double sum = 0.0;
                    for (int p = 0; p < k; ++p)
                        for (int q = 0; q < k; ++q)
                            if (u - p >= 0 && u - p < f && v - q >= 0 && v - q < f)
                                sum += static_cast<double>(wk[p * k + q]) * filt[(u - p) * f + (v - q)];
                    composed[u * length + v] = 4.0 * sum;
                }
            for (int a = 0; a < 2; ++a)
                for (int b = 0; b < 2; ++b)
                    for (int ty = 0; ty < T; ++ty)
                        for (int tx = 0; tx < T; ++tx) {
                            const int u = 2 * (L.pad_before - ty) + a + L.shift, v = 2 * (L.pad_before - tx) + b + L.shift;
                            if (u >= 0 && u < length && v >= 0 && v < length)
                                at(2 * a + b, ty * T + tx, i, o) = stylert_float_to_half(static_cast<float>(composed[u * length + v]));
                        }
        }
}

// The host entry points of the fused kernel, defined once for both libraries (like STYLERT_DEFINE_GEOMETRY).
#define STYLERT_DEFINE_FUSED_HOST                                                                             \
    int stylert_fused_modulated_conv2d_taps(int kernel, int up, int padding, int filter_size) {              \
        StylertFusedLayer L = stylert_fused_layer(1, 1, kernel, up, padding, filter_size);                   \
        return L.valid ? L.taps : -1;                                                                        \
    }                                                                                                        \
    size_t stylert_fused_modulated_conv2d_prepared_size(int I, int O, int k, int up, int pad, int f) {       \
        StylertFusedLayer L = stylert_fused_layer(I, O, k, up, pad, f);                                      \
        return L.valid ? stylert_fused_prepared_bytes(L) : 0;                                                \
    }                                                                                                        \
    size_t stylert_fused_modulated_conv2d_workspace(int B, int O) {                                          \
        return static_cast<size_t>(B > 0 ? B : 0) * (O > 0 ? O : 0) * sizeof(float);                         \
    }                                                                                                        \
    int stylert_fused_modulated_conv2d_prepare(const float* weight, const float* filter, void* prepared, int I, \
                                               int O, int k, int up, int pad, int f) {                      \
        StylertFusedLayer L = stylert_fused_layer(I, O, k, up, pad, f);                                      \
        if (!weight || !prepared || !L.valid || (up == 2 && (!filter || k + f - 1 > 16)))                   \
            return STYLERT_BAD_ARGUMENT;                                                                     \
        stylert_fused_prepare(L, weight, filter, prepared);                                                  \
        return STYLERT_OK;                                                                                   \
    }
