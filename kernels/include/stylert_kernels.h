/* stylert kernels: the parts of a modulated convolution worth fusing around a library conv,
 * and the BAFS blend (StyleRetoucher Eq. 5). Activation form of the modulated conv:
 *     y = epilogue(conv(modulate(x, s), W), d),   d[b,o] = rsqrt(sum_i s[b,i]^2 Wsq[i,o] + eps)
 * Every function exists twice with the same arguments: stylert_*_cpu (reference, host memory)
 * and stylert_* (CUDA, device memory, asynchronous on `stream`). Tensors are contiguous NCHW (the tensor-core
 * fused conv's: NHWC);
 * `dtype` selects float32 or float16 storage for activations; styles, coefficients, noise and
 * bias are float32, and all arithmetic is float32. Return 0 on success, else a stylert_status. */
#ifndef STYLERT_KERNELS_H
#define STYLERT_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { STYLERT_F32 = 0, STYLERT_F16 = 1 } stylert_dtype;
typedef enum { STYLERT_OK = 0, STYLERT_BAD_ARGUMENT = 1, STYLERT_CUDA_ERROR = 2 } stylert_status;
typedef void* stylert_stream; /* a cudaStream_t; ignored by the _cpu functions */

/* out[b,i,p] = x[b,i,p] * styles[b,i]                      (modulation, p over H*W) */
int stylert_modulate(const void* x, const float* styles, void* out, int batch, int channels, int pixels,
                     stylert_dtype dtype, stylert_stream stream);
int stylert_modulate_cpu(const void* x, const float* styles, void* out, int batch, int channels, int pixels,
                         stylert_dtype dtype, stylert_stream stream);

/* d[b,o] = rsqrt(sum_i styles[b,i]^2 * wsq[i,o] + eps)     (demodulation coefficients) */
int stylert_demod_coefficients(const float* styles, const float* wsq, float* d, int batch, int in_channels,
                               int out_channels, float eps, stylert_stream stream);
int stylert_demod_coefficients_cpu(const float* styles, const float* wsq, float* d, int batch, int in_channels,
                                   int out_channels, float eps, stylert_stream stream);

/* In place on y[b,o,p]: v = y * (d ? d[b,o] : 1) + (noise ? noise[p] : 0) + bias[o];
 * lrelu: v = (v < 0 ? 0.2 v : v) * gain; clamp >= 0: v = min(max(v, -clamp), clamp). */
int stylert_demod_bias_act(void* y, const float* d, const float* noise, const float* bias, int batch, int channels,
                           int pixels, int lrelu, float gain, float clamp, stylert_dtype dtype, stylert_stream stream);
int stylert_demod_bias_act_cpu(void* y, const float* d, const float* noise, const float* bias, int batch, int channels,
                               int pixels, int lrelu, float gain, float clamp, stylert_dtype dtype, stylert_stream stream);

/* out = ms*mc*fs + (1-ms)*(1-mc)*fi with ms[b,p] (one channel) and mc[b,c] (one value per channel). */
int stylert_bafs_blend(const void* fs, const void* fi, const void* ms, const void* mc, void* out, int batch,
                       int channels, int pixels, stylert_dtype dtype, stylert_stream stream);
int stylert_bafs_blend_cpu(const void* fs, const void* fi, const void* ms, const void* mc, void* out, int batch,
                           int channels, int pixels, stylert_dtype dtype, stylert_stream stream);

/* dst[i] = float(src[i]) for `count` binary16 values (fp16 weights, bias, noise, filter of a plugin node). */
int stylert_half_to_float(const void* src, float* dst, size_t count, stylert_stream stream);
int stylert_half_to_float_cpu(const void* src, float* dst, size_t count, stylert_stream stream);

/* The whole ModulatedConv2d plugin node (reference: ops.modconv.modulated_conv_bias_act), with
 * weight [O,I,k,k] (gain applied), bias [O], noise [Ho*Wo] (x strength) or NULL, and for up = 2
 * the FIR filter [f,f] (else NULL). A direct convolution with the modulation folded into its
 * input loads: up = 1 is a conv with `padding`; up = 2 a stride-2 transposed conv, then the FIR
 * (gain 4, NVlabs conv2d_resample padding). Demodulation, noise, bias, lrelu x gain and clamp
 * are fused into the final store. x/out in `dtype`; weight, filter and the rest float32.
 * `workspace`: device (or, for _cpu, host) scratch of stylert_modulated_conv2d_workspace bytes; for
 * up = 2 it holds one sample's transposed-conv output, whatever the batch. */
int stylert_modulated_conv2d_output_size(int size, int kernel, int up, int padding, int filter_size);
size_t stylert_modulated_conv2d_workspace(int batch, int in_channels, int out_channels, int height, int width,
                                          int kernel, int up);
int stylert_modulated_conv2d(const void* x, const float* styles, const float* weight, const float* bias,
                             const float* noise, const float* filter, void* out, void* workspace, int batch,
                             int in_channels, int out_channels, int height, int width, int kernel, int up, int padding,
                             int filter_size, int demodulate, int lrelu, float gain, float clamp, stylert_dtype dtype,
                             stylert_stream stream);
int stylert_modulated_conv2d_cpu(const void* x, const float* styles, const float* weight, const float* bias,
                                 const float* noise, const float* filter, void* out, void* workspace, int batch,
                                 int in_channels, int out_channels, int height, int width, int kernel, int up,
                                 int padding, int filter_size, int demodulate, int lrelu, float gain, float clamp,
                                 stylert_dtype dtype, stylert_stream stream);

/* Tensor-core fused modulated conv (implicit GEMM on WMMA tiles: fp16 operands, fp32 accumulation), channels-last:
 *     y[n,p,o] = epilogue(d[n,o] * sum_{t,i} G[t,i,o] * fp16(x[n,p+t,i] * s[n,i]))
 * x [B,H,W,I] and out [B,Ho,Wo,O] (NHWC) in `dtype`; the modulated input is rounded to fp16 as it is staged,
 * whatever the storage. up = 1: G is the layer's weight; up = 2: the 4 phase kernels of the transposed conv
 * composed with the FIR (ops.modconv.upsampling_phase_weights), each a stride-1 conv writing every other output
 * pixel: no intermediate, no FIR pass. Noise [Ho*Wo] or NULL, bias [O], lrelu, gain, clamp as
 * stylert_modulated_conv2d. The weights are prepared once per layer, on the host, by
 * stylert_fused_modulated_conv2d_prepare (weight [O,I,k,k] float32 with gain applied; filter [f,f] for up = 2,
 * else NULL) into `prepared` (host memory of _prepared_size bytes; 0 = layer not supported); the caller keeps it
 * and, for the CUDA library, copies it to the device (16-byte aligned) once. `workspace`: _workspace(B, O)
 * bytes, the demodulation coefficients (device or, for _cpu, host). The host functions are the same in both
 * libraries. _taps gives the phase kernels' size (k for up = 1; -1 if not supported). */
int stylert_fused_modulated_conv2d_taps(int kernel, int up, int padding, int filter_size);
size_t stylert_fused_modulated_conv2d_prepared_size(int in_channels, int out_channels, int kernel, int up,
                                                    int padding, int filter_size);
size_t stylert_fused_modulated_conv2d_workspace(int batch, int out_channels);
int stylert_fused_modulated_conv2d_prepare(const float* weight, const float* filter, void* prepared, int in_channels,
                                           int out_channels, int kernel, int up, int padding, int filter_size);
int stylert_fused_modulated_conv2d(const void* x, const float* styles, const void* prepared, const float* bias,
                                   const float* noise, void* out, void* workspace, int batch, int in_channels,
                                   int out_channels, int height, int width, int kernel, int up, int padding,
                                   int filter_size, int demodulate, int lrelu, float gain, float clamp,
                                   stylert_dtype dtype, stylert_stream stream);
int stylert_fused_modulated_conv2d_cpu(const void* x, const float* styles, const void* prepared, const float* bias,
                                       const float* noise, void* out, void* workspace, int batch, int in_channels,
                                       int out_channels, int height, int width, int kernel, int up, int padding,
                                       int filter_size, int demodulate, int lrelu, float gain, float clamp,
                                       stylert_dtype dtype, stylert_stream stream);

#ifdef __cplusplus
}
#endif
#endif
