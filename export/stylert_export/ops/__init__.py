"""Plain-PyTorch reference ops of the StyleGAN2 family: the forms every exporter can read."""
from .bias_act import LRELU_GAIN, bias_lrelu
from .modconv import FORMS, IMPLS, composed_up_kernel, current_modconv_impl, demod_coefficients, modconv_impl, \
    modulated_conv2d, modulated_conv_bias_act, upsampling_phase_weights
from .upfirdn2d import setup_filter, upfirdn2d, upsample2d

__all__ = ["LRELU_GAIN", "bias_lrelu", "FORMS", "IMPLS", "composed_up_kernel", "current_modconv_impl",
           "demod_coefficients", "modconv_impl", "modulated_conv2d", "modulated_conv_bias_act", "setup_filter",
           "upfirdn2d", "upsample2d", "upsampling_phase_weights"]
