"""Reference ops against direct transcriptions of their definitions, on fresh random inputs."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import rel_error  # noqa: E402
from stylert_export.ops import bias_lrelu, composed_up_kernel, demod_coefficients, modulated_conv2d, setup_filter, \
    upfirdn2d, upsample2d, upsampling_phase_weights  # noqa: E402
from stylert_export.ops.modconv import _upsampling_conv  # noqa: E402
from stylert_export.ops.winograd import WinogradForm, applies, winograd_conv2d  # noqa: E402


def upfirdn2d_direct(x, f, up, down, pad, gain):
    """Loop transcription: zero-insert, pad, true convolution with f, decimate."""
    b, c, h, w = x.shape
    u = np.zeros((b, c, h * up, w * up))
    u[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = pad
    u = np.pad(u, ((0, 0), (0, 0), (py0, py1), (px0, px1)))
    fh, fw = f.shape
    k = f[::-1, ::-1] * gain
    oh, ow = u.shape[2] - fh + 1, u.shape[3] - fw + 1
    out = np.zeros((b, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = (u[:, :, i:i + fh, j:j + fw] * k).sum(axis=(2, 3))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2, 0, 1)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (2, 2, (1, 2, 2, 1))])
def test_upfirdn2d_matches_definition(up, down, pad):
    rng = np.random.default_rng(up * 10 + down)
    x = rng.standard_normal((2, 3, 7, 6))
    f = rng.standard_normal((4, 3))  # asymmetric: catches a flipped filter
    got = upfirdn2d(torch.from_numpy(x).float(), torch.from_numpy(f).float(), up=up, down=down, pad=pad, gain=1.5)
    want = upfirdn2d_direct(x, f, up, down, pad, 1.5)
    assert got.shape == want.shape
    assert rel_error(got.numpy(), want) < 1e-5


def test_upsample2d_keeps_constant_images_constant():
    x = torch.full((1, 2, 8, 8), 0.7)
    y = upsample2d(x, setup_filter([1, 3, 3, 1]))
    assert y.shape == (1, 2, 16, 16)
    assert torch.allclose(y[:, :, 2:-2, 2:-2], torch.tensor(0.7), atol=1e-6)


def test_bias_lrelu_formula():
    x, b = torch.randn(2, 5, 3, 3), torch.randn(5)
    want = x + b[None, :, None, None]
    want = torch.where(want >= 0, want, 0.2 * want) * 2 ** 0.5
    assert torch.allclose(bias_lrelu(x, b), want, atol=1e-6)
    assert bias_lrelu(100 * x, b, clamp=3.0).abs().max() <= 3.0


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modconv_forms_agree(up, demodulate):
    """Weight (grouped) form == activation form on random inputs, each sample with its own styles."""
    g = torch.Generator().manual_seed(up * 2 + demodulate)
    x = torch.randn(3, 8, 9, 9, generator=g)
    w = torch.randn(6, 8, 3, 3, generator=g) / 8
    s = torch.randn(3, 8, generator=g) + 1
    f = setup_filter([1, 3, 3, 1])
    a = modulated_conv2d(x, w, s, demodulate=demodulate, up=up, padding=1, resample_filter=f, form="activation")
    for form in ("weight", "phase"):
        b = modulated_conv2d(x, w, s, demodulate=demodulate, up=up, padding=1, resample_filter=f, form=form)
        err = rel_error(a.numpy(), b.numpy())
        print(f"modconv up={up} demod={demodulate}, {form} form: relative error {err:.2e}")
        assert a.shape == b.shape == (3, 6, 9 * up, 9 * up)
        assert err < 1e-5


def _up_reference(x, w, f):
    """StyleGAN2's up layer as the research code runs it: stride-2 transposed conv, then the FIR blur."""
    return _upsampling_conv(x, w.transpose(0, 1), 1, 1, f)


def test_composed_up_kernel_is_the_impulse_response():
    """The 6x6 kernel K = 4 (W * f) is what transposed conv + FIR does to one input pixel."""
    g = torch.Generator().manual_seed(11)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    f = torch.rand(4, 4, generator=g, dtype=torch.float64)  # asymmetric: a flipped filter shows
    k = composed_up_kernel(w, f)
    assert k.shape == (3, 2, 6, 6)
    for i in range(2):
        x = torch.zeros(1, 2, 7, 7, dtype=torch.float64)
        x[0, i, 3, 3] = 1
        y = _up_reference(x, w, f)  # out[n] = K[n - 2 * 3 + 2]: K occupies rows/cols 4..9
        assert torch.equal(y[0, :, 4:10, 4:10], k[:, i]) or rel_error(y[0, :, 4:10, 4:10].numpy(), k[:, i].numpy()) < 1e-12
        assert y[0, :, :4].abs().max() == 0 and y[0, :, 10:].abs().max() == 0


@pytest.mark.parametrize("shape", [(2, 5, 7, 4), (1, 3, 1, 1), (3, 4, 8, 8)])
def test_phase_decomposition_equals_transposed_conv_and_fir(shape):
    """The 4 phase kernels of a stride-1 conv + depth-to-space == transposed conv + FIR, on fresh inputs."""
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(6, shape[1], 3, 3, generator=g, dtype=torch.float64)
    for f in (setup_filter([1, 3, 3, 1]).double(), torch.rand(4, 4, generator=g, dtype=torch.float64)):
        phases, (before, after) = upsampling_phase_weights(w, f, padding=1)
        assert phases.shape == (6 * 4, shape[1], 3, 3) and (before, after) == (1, 1)
        got = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, [before, after, before, after]), phases), 2)
        want = _up_reference(x, w, f)
        err = rel_error(got.numpy(), want.numpy())
        print(f"phase decomposition {shape}: relative error {err:.2e}")
        assert got.shape == want.shape == (shape[0], 6, 2 * shape[2], 2 * shape[3]) and err < 1e-12
    k = composed_up_kernel(w, f)  # phase (a, b) holds K's taps 4 + a - 2t, 4 + b - 2u (t, u = 0..2), e.g. (1, 0):
    assert torch.equal(phases.reshape(6, 2, 2, shape[1], 3, 3)[:, 1, 0], k[:, :, [5, 3, 1]][:, :, :, [4, 2, 0]])


def test_phase_weights_refuse_a_layer_that_is_not_2x():
    with pytest.raises(ValueError, match="not a 2x upsampling layer"):
        upsampling_phase_weights(torch.randn(2, 2, 3, 3), setup_filter([1, 3, 3, 1]), padding=0)


def test_modconv_weight_form_is_per_sample():
    """Sample i of a batch equals the same sample run alone (no cross-sample leakage in grouped conv)."""
    x, w, s = torch.randn(4, 5, 6, 6), torch.randn(7, 5, 3, 3), torch.randn(4, 5)
    full = modulated_conv2d(x, w, s, padding=1, form="weight")
    alone = modulated_conv2d(x[2:3], w, s[2:3], padding=1, form="weight")
    assert rel_error(full[2:3].numpy(), alone.numpy()) < 1e-6


def test_demodulated_output_has_unit_weight_norm():
    """Eq. 3 of StyleGAN2: demodulated weights have unit L2 norm per output channel."""
    w, s = torch.randn(6, 8, 3, 3), torch.randn(2, 8)
    d = demod_coefficients(w, s)
    wm = w[None] * s[:, None, :, None, None] * d[:, :, None, None, None]
    assert torch.allclose(wm.square().sum(dim=[2, 3, 4]), torch.ones(2, 6), atol=1e-4)


def test_unknown_form_is_an_error():
    with pytest.raises(ValueError, match="unknown modulated conv form"):
        modulated_conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3), torch.randn(1, 2), form="fused")


@pytest.mark.parametrize("shape, padding", [((2, 5, 9, 13), 1), ((1, 4, 8, 8), 0), ((3, 6, 17, 5), 1),
                                            ((1, 3, 4, 4), 2)])
def test_winograd_conv2d_matches_direct_conv(shape, padding):
    """F(4x4,3x3) in float32 against the direct conv computed in float64, on fresh random inputs: sides that are and
    are not multiples of the 4x4 tile, with and without padding."""
    x, w, b = torch.randn(shape), torch.randn(7, shape[1], 3, 3), torch.randn(7)
    got = winograd_conv2d(x, w, b, [1, 1], [padding, padding], [1, 1], 1, min_channels=1, min_pixels=1)
    want = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=padding)
    err = rel_error(got.numpy(), want.numpy())
    print(f"winograd {shape} padding {padding}: relative error {err:.2e}")
    assert got.shape == want.shape and err < 1e-5


@pytest.mark.parametrize("change, why", [
    ({}, None), ({"w": (256, 256, 1, 1)}, "1x1 kernel"), ({"stride": 2}, "stride 2"), ({"dilation": 2}, "dilated"),
    ({"groups": 2, "w": (256, 128, 3, 3)}, "grouped"), ({"w": (128, 256, 3, 3)}, "128 output channels"),
    ({"x": (1, 128, 16, 16), "w": (256, 128, 3, 3)}, "128 input channels"), ({"x": (1, 256, 8, 8)}, "8x8 output"),
    ({"dtype": torch.float16}, "float16"), ({"padding": [1, 0]}, "padding that differs between sides")])
def test_winograd_form_takes_only_wide_3x3_stride_1_convs(change, why):
    """Where it ran slower on ONNX Runtime's CPU (fewer than 256 channels, under 16x16 outputs) or does not apply,
    the conv stays direct: winograd_conv2d answers NotImplemented, and under WinogradForm F.conv2d is the direct
    conv, bit for bit."""
    args = {"x": (1, 256, 16, 16), "w": (256, 256, 3, 3), "stride": 1, "padding": 1, "dilation": 1, "groups": 1,
            "dtype": torch.float32, **change}
    x, w = torch.randn(args["x"], dtype=args["dtype"]), torch.randn(args["w"], dtype=args["dtype"]) / 48
    conv = dict(stride=args["stride"], padding=args["padding"], dilation=args["dilation"], groups=args["groups"])
    direct = torch.nn.functional.conv2d(x, w, **conv).float()
    with WinogradForm():
        traced = torch.nn.functional.conv2d(x, w, **conv).float()
    assert applies(x, w, **conv) is (why is None)
    if why is None:
        err = rel_error(traced.numpy(), direct.numpy())
        print(f"winograd 256 channels 16x16: relative error {err:.2e} against the direct float32 conv")
        assert 0 < err < 1e-5  # the Winograd form's own round-off: it ran
    else:
        assert winograd_conv2d(x, w, None, **conv) is NotImplemented
        assert torch.equal(traced, direct), why


def test_winograd_form_takes_modules_keywords_and_padding_modes():
    """Under WinogradForm, an nn.Conv2d (zero and reflect padding), a call by keywords and padding="same" are
    written in the form (counted) and equal the direct conv within its round-off."""
    x = torch.randn(2, 256, 16, 16)
    form = WinogradForm()
    for mode in ("zeros", "reflect"):
        conv = torch.nn.Conv2d(256, 256, 3, padding=1, padding_mode=mode).eval().requires_grad_(False)
        with form:
            got = conv(x)
        err = rel_error(got.numpy(), conv(x).numpy())
        print(f"nn.Conv2d, padding_mode {mode}, in the form: relative error {err:.2e}")
        assert 0 < err < 1e-5
    w = torch.randn(256, 256, 3, 3) / 48
    with form:
        by_keywords = torch.nn.functional.conv2d(input=x, weight=w, padding="same")
    assert 0 < rel_error(by_keywords.numpy(), torch.nn.functional.conv2d(x, w, padding=1).numpy()) < 1e-5
    assert form.written == 3
