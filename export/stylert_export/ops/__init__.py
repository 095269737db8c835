"""Plain-PyTorch reference ops of the StyleGAN2 family: the forms every exporter can read."""
from .bias_act import LRELU_GAIN, bias_lrelu
from .modconv import FORMS, composed_up_kernel, demod_coefficients, fused_modulated_conv, modulated_conv2d, \
    upsampling_phase_weights
from .upfirdn2d import setup_filter, upfirdn2d, upsample2d

__all__ = ["LRELU_GAIN", "bias_lrelu", "FORMS", "composed_up_kernel", "demod_coefficients", "fused_modulated_conv",
           "modulated_conv2d", "setup_filter", "upfirdn2d", "upsample2d", "upsampling_phase_weights"]
