// CPU reference of every kernel in stylert_kernels.h (host memory, float32 math).
#include "stylert_kernels.h"
#include "kernels_common.h"

#include <math.h>
#include <stddef.h>

namespace {

template <typename T> float load(const void* p, size_t i) { return static_cast<float>(static_cast<const T*>(p)[i]); }
template <typename T> void store(void* p, size_t i, float v) { static_cast<T*>(p)[i] = static_cast<T>(v); }

template <typename T>
void modulate(const void* x, const float* s, void* out, int B, int C, int P) {
    for (size_t bc = 0; bc < static_cast<size_t>(B) * C; ++bc)
        for (size_t p = 0; p < static_cast<size_t>(P); ++p) store<T>(out, bc * P + p, load<T>(x, bc * P + p) * s[bc]);
}

template <typename T>
void epilogue(void* y, const float* d, const float* noise, const float* bias, int B, int C, int P, int lrelu,
              float gain, float clamp) {
    for (size_t b = 0; b < static_cast<size_t>(B); ++b)
        for (size_t c = 0; c < static_cast<size_t>(C); ++c)
            for (size_t p = 0; p < static_cast<size_t>(P); ++p) {
                size_t i = (b * C + c) * P + p;
                store<T>(y, i, stylert_epilogue(load<T>(y, i), d ? d[b * C + c] : 1.0f, noise ? noise[p] : 0.0f,
                                                bias[c], lrelu, gain, clamp));
            }
}

template <typename T>
void blend(const void* fs, const void* fi, const void* ms, const void* mc, void* out, int B, int C, int P) {
    for (size_t b = 0; b < static_cast<size_t>(B); ++b)
        for (size_t c = 0; c < static_cast<size_t>(C); ++c)
            for (size_t p = 0; p < static_cast<size_t>(P); ++p) {
                size_t i = (b * C + c) * P + p;
                store<T>(out, i, stylert_blend(load<T>(fs, i), load<T>(fi, i), load<T>(ms, b * P + p),
                                               load<T>(mc, b * C + c)));
            }
}

bool bad(int B, int C, int P) { return B <= 0 || C <= 0 || P <= 0; }

}  // namespace

extern "C" {

int stylert_modulate_cpu(const void* x, const float* styles, void* out, int B, int C, int P, stylert_dtype dtype,
                         stylert_stream) {
    if (!x || !styles || !out || bad(B, C, P)) return STYLERT_BAD_ARGUMENT;
    dtype == STYLERT_F16 ? modulate<_Float16>(x, styles, out, B, C, P) : modulate<float>(x, styles, out, B, C, P);
    return STYLERT_OK;
}

int stylert_demod_coefficients_cpu(const float* s, const float* wsq, float* d, int B, int I, int O, float eps,
                                   stylert_stream) {
    if (!s || !wsq || !d || bad(B, I, O)) return STYLERT_BAD_ARGUMENT;
    for (int b = 0; b < B; ++b)
        for (int o = 0; o < O; ++o) {
            float acc = 0.0f;
            for (int i = 0; i < I; ++i) acc += s[b * I + i] * s[b * I + i] * wsq[i * O + o];
            d[b * O + o] = 1.0f / sqrtf(acc + eps);
        }
    return STYLERT_OK;
}

int stylert_demod_bias_act_cpu(void* y, const float* d, const float* noise, const float* bias, int B, int C, int P,
                               int lrelu, float gain, float clamp, stylert_dtype dtype, stylert_stream) {
    if (!y || !bias || bad(B, C, P)) return STYLERT_BAD_ARGUMENT;
    dtype == STYLERT_F16 ? epilogue<_Float16>(y, d, noise, bias, B, C, P, lrelu, gain, clamp)
                         : epilogue<float>(y, d, noise, bias, B, C, P, lrelu, gain, clamp);
    return STYLERT_OK;
}

int stylert_bafs_blend_cpu(const void* fs, const void* fi, const void* ms, const void* mc, void* out, int B, int C,
                           int P, stylert_dtype dtype, stylert_stream) {
    if (!fs || !fi || !ms || !mc || !out || bad(B, C, P)) return STYLERT_BAD_ARGUMENT;
    dtype == STYLERT_F16 ? blend<_Float16>(fs, fi, ms, mc, out, B, C, P) : blend<float>(fs, fi, ms, mc, out, B, C, P);
    return STYLERT_OK;
}

}  // extern "C"
