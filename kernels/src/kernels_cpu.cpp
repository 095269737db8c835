// CPU reference of every kernel in stylert_kernels.h (host memory, float32 math).
#include "stylert_kernels.h"
#include "kernels_common.h"

#include <math.h>
#include <stddef.h>

#include <vector>

namespace {

struct Half {  // binary16 storage, converted in software (kernels_common.h)
    unsigned short bits;
};

template <typename T> float load(const void* p, size_t i) { return static_cast<float>(static_cast<const T*>(p)[i]); }
template <typename T> void store(void* p, size_t i, float v) { static_cast<T*>(p)[i] = static_cast<T>(v); }
template <> float load<Half>(const void* p, size_t i) { return stylert_half_to_float(static_cast<const Half*>(p)[i].bits); }
template <> void store<Half>(void* p, size_t i, float v) { static_cast<Half*>(p)[i].bits = stylert_float_to_half(v); }

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

template <typename T>
void modconv(const void* x, const float* s, const float* w, const float* bias, const float* noise, const float* filt,
             void* out, float* ws, const StylertConvShape& sh, int demod, int lrelu, float gain, float clamp) {
    const int B = sh.B, I = sh.I, O = sh.O, H = sh.H, W = sh.W, k = sh.k;
    float* wsq = ws;
    float* d = ws + static_cast<size_t>(I) * O;
    float* mid = d + static_cast<size_t>(B) * O;
    if (demod) {
        for (int i = 0; i < I; ++i)
            for (int o = 0; o < O; ++o) {
                float acc = 0.0f;
                for (int t = 0; t < k * k; ++t) acc += w[(static_cast<size_t>(o) * I + i) * k * k + t] * w[(static_cast<size_t>(o) * I + i) * k * k + t];
                wsq[i * O + o] = acc;
            }
        stylert_demod_coefficients_cpu(s, wsq, d, B, I, O, STYLERT_DEMOD_EPS, nullptr);
    }
    const int Ho = sh.out_h(), Wo = sh.out_w(), Hm = sh.mid_h(), Wm = sh.mid_w();
    auto xin = [&](int b, int i, int y, int xx) { return load<T>(x, ((static_cast<size_t>(b) * I + i) * H + y) * W + xx); };
    auto wt = [&](int o, int i, int ky, int kx) { return w[((static_cast<size_t>(o) * I + i) * k + ky) * k + kx]; };
    auto finish = [&](int b, int o, int y, int xx, float acc) {
        size_t idx = ((static_cast<size_t>(b) * O + o) * Ho + y) * Wo + xx;
        store<T>(out, idx, stylert_epilogue(acc, demod ? d[b * O + o] : 1.0f, noise ? noise[y * Wo + xx] : 0.0f,
                                            bias[o], lrelu, gain, clamp));
    };
    for (int b = 0; b < B; ++b)
        for (int o = 0; o < O; ++o) {
            if (sh.up == 1) {
                for (int y = 0; y < Ho; ++y)
                    for (int xx = 0; xx < Wo; ++xx) {
                        float acc = 0.0f;
                        for (int i = 0; i < I; ++i) {
                            float part = 0.0f;
                            for (int ky = 0; ky < k; ++ky)
                                for (int kx = 0; kx < k; ++kx) {
                                    int iy = y + ky - sh.pad, ix = xx + kx - sh.pad;
                                    if (iy >= 0 && iy < H && ix >= 0 && ix < W) part += xin(b, i, iy, ix) * wt(o, i, ky, kx);
                                }
                            acc += s[b * I + i] * part;
                        }
                        finish(b, o, y, xx, acc);
                    }
                continue;
            }
            float* m = mid + static_cast<size_t>(o) * Hm * Wm;  // stride-2 transposed conv (one sample at a time)
            for (int Y = 0; Y < Hm; ++Y)
                for (int X = 0; X < Wm; ++X) {
                    float acc = 0.0f;
                    for (int i = 0; i < I; ++i) {
                        float part = 0.0f;
                        for (int ky = (Y & 1); ky < k; ky += 2)
                            for (int kx = (X & 1); kx < k; kx += 2) {
                                int iy = (Y - ky) / 2, ix = (X - kx) / 2;
                                if (Y >= ky && X >= kx && iy < H && ix < W) part += xin(b, i, iy, ix) * wt(o, i, ky, kx);
                            }
                        acc += s[b * I + i] * part;
                    }
                    m[Y * Wm + X] = acc;
                }
            const int f = sh.f, p0 = sh.fir_p0();  // FIR, gain up^2 = 4
            for (int y = 0; y < Ho; ++y)
                for (int xx = 0; xx < Wo; ++xx) {
                    float acc = 0.0f;
                    for (int fy = 0; fy < f; ++fy)
                        for (int fx = 0; fx < f; ++fx) {
                            int my = y + fy - p0, mx = xx + fx - p0;
                            if (my >= 0 && my < Hm && mx >= 0 && mx < Wm)
                                acc += m[my * Wm + mx] * 4.0f * filt[(f - 1 - fy) * f + (f - 1 - fx)];
                        }
                    finish(b, o, y, xx, acc);
                }
        }
}

// The tensor-core fused conv's math on the CPU, walking its K steps with its addressing (kernels_common.h): the
// modulated input rounded to fp16, the prepared fp16 weights widened exactly, products exact in float32, float32
// accumulation; NHWC.
template <typename S>
void fused(const void* x, const float* s, const unsigned char* prepared, const float* bias, const float* noise,
           void* out, float* d, const StylertFusedShape& g, int demod, int lrelu, float gain, float clamp) {
    const StylertFusedLayer& L = g.L;
    const int I = L.I, O = L.O, steps = stylert_fused_steps(L);
    if (demod)
        stylert_demod_coefficients_cpu(s, reinterpret_cast<const float*>(prepared), d, g.B, I, O, STYLERT_DEMOD_EPS,
                                       nullptr);
    const unsigned short* wp = reinterpret_cast<const unsigned short*>(prepared + stylert_fused_wsq_bytes(L));
    std::vector<float> wf(static_cast<size_t>(L.phases) * steps * STYLERT_FUSED_TILE_K * L.o_pad);  // widened
    for (size_t e = 0; e < wf.size(); ++e) wf[e] = stylert_half_to_float(wp[e]);
    const size_t image = static_cast<size_t>(g.H) * g.W * I;
    std::vector<float> xm(static_cast<size_t>(g.B) * image), acc(O);
    for (size_t e = 0; e < xm.size(); ++e)  // modulation, rounded to fp16 as the kernel stages it
        xm[e] = stylert_half_to_float(stylert_float_to_half(load<S>(x, e) * s[e / image * I + e % I]));
    for (int n = 0; n < g.B; ++n)
        for (int phase = 0; phase < L.phases; ++phase)
            for (int m = 0; m < g.grid_h * g.grid_w; ++m) {
                for (int o = 0; o < O; ++o) acc[o] = 0.0f;
                for (int step = 0; step < steps; ++step) {
                    int i0;
                    const long long pixel = stylert_fused_input(g, n, m / g.grid_w, m % g.grid_w, step, &i0);
                    if (pixel < 0) continue;  // zero padding
                    const float* wt = &wf[stylert_fused_weights(L, phase, step, 0)];
                    for (int i = i0; i < I && i < i0 + STYLERT_FUSED_TILE_K; ++i) {
                        const float xv = xm[pixel + i];
                        for (int o = 0; o < O; ++o) acc[o] += xv * wt[(i - i0) * L.o_pad + o];
                    }
                }
                int oy, ox;
                stylert_fused_output(g, phase, m, &oy, &ox);
                for (int o = 0; o < O; ++o)
                    store<S>(out, ((static_cast<size_t>(n) * g.out_h + oy) * g.out_w + ox) * O + o,
                             stylert_epilogue(acc[o], demod ? d[n * O + o] : 1.0f,
                                              noise ? noise[oy * g.out_w + ox] : 0.0f, bias[o], lrelu, gain, clamp));
            }
}

}  // namespace

extern "C" {

int stylert_modulate_cpu(const void* x, const float* styles, void* out, int B, int C, int P, stylert_dtype dtype,
                         stylert_stream) {
    if (!x || !styles || !out || bad(B, C, P)) return STYLERT_BAD_ARGUMENT;
    dtype == STYLERT_F16 ? modulate<Half>(x, styles, out, B, C, P) : modulate<float>(x, styles, out, B, C, P);
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
    dtype == STYLERT_F16 ? epilogue<Half>(y, d, noise, bias, B, C, P, lrelu, gain, clamp)
                         : epilogue<float>(y, d, noise, bias, B, C, P, lrelu, gain, clamp);
    return STYLERT_OK;
}

int stylert_bafs_blend_cpu(const void* fs, const void* fi, const void* ms, const void* mc, void* out, int B, int C,
                           int P, stylert_dtype dtype, stylert_stream) {
    if (!fs || !fi || !ms || !mc || !out || bad(B, C, P)) return STYLERT_BAD_ARGUMENT;
    dtype == STYLERT_F16 ? blend<Half>(fs, fi, ms, mc, out, B, C, P) : blend<float>(fs, fi, ms, mc, out, B, C, P);
    return STYLERT_OK;
}

STYLERT_DEFINE_GEOMETRY

int stylert_half_to_float_cpu(const void* src, float* dst, size_t count, stylert_stream) {
    if (!src || !dst) return STYLERT_BAD_ARGUMENT;
    for (size_t i = 0; i < count; ++i) dst[i] = load<Half>(src, i);
    return STYLERT_OK;
}

int stylert_modulated_conv2d_cpu(const void* x, const float* styles, const float* weight, const float* bias,
                                 const float* noise, const float* filter, void* out, void* workspace, int B, int I,
                                 int O, int H, int W, int k, int up, int pad, int f, int demodulate, int lrelu,
                                 float gain, float clamp, stylert_dtype dtype, stylert_stream) {
    StylertConvShape sh{B, I, O, H, W, k, up, pad, up == 2 ? f : 1};
    if (!x || !styles || !weight || !bias || !out || !workspace || !sh.valid() || (up == 2 && !filter))
        return STYLERT_BAD_ARGUMENT;
    float* ws = static_cast<float*>(workspace);
    dtype == STYLERT_F16
        ? modconv<Half>(x, styles, weight, bias, noise, filter, out, ws, sh, demodulate, lrelu, gain, clamp)
        : modconv<float>(x, styles, weight, bias, noise, filter, out, ws, sh, demodulate, lrelu, gain, clamp);
    return STYLERT_OK;
}

STYLERT_DEFINE_FUSED_HOST

int stylert_fused_modulated_conv2d_cpu(const void* x, const float* styles, const void* prepared, const float* bias,
                                       const float* noise, void* out, void* workspace, int B, int I, int O, int H,
                                       int W, int k, int up, int pad, int f, int demodulate, int lrelu, float gain,
                                       float clamp, stylert_dtype dtype, stylert_stream) {
    StylertFusedShape g;
    if (!x || !styles || !prepared || !bias || !out || (demodulate && !workspace) ||
        !stylert_fused_shape(B, I, O, H, W, k, up, pad, f, &g) || (dtype != STYLERT_F32 && dtype != STYLERT_F16))
        return STYLERT_BAD_ARGUMENT;
    const unsigned char* prep = static_cast<const unsigned char*>(prepared);
    float* d = static_cast<float*>(workspace);
    dtype == STYLERT_F16 ? fused<Half>(x, styles, prep, bias, noise, out, d, g, demodulate, lrelu, gain, clamp)
                         : fused<float>(x, styles, prep, bias, noise, out, d, g, demodulate, lrelu, gain, clamp);
    return STYLERT_OK;
}

}  // extern "C"
