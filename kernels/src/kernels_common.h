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
