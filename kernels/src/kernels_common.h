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
