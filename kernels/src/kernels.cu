// CUDA kernels of stylert_kernels.h: device memory, asynchronous on the given stream.
// Element-wise formulas come from kernels_common.h, shared with the CPU reference.
#include "stylert_kernels.h"
#include "kernels_common.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>

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

}  // extern "C"
