"""What every call shares through the one whole-photo pipeline (faces/pipeline.FaceModel): the batch limit is
refused the same way by each call, and `stylert.Inpainter` opens each inpainting method as its own call class."""
import numpy as np
import pytest

import stylert
from stylert.calls.inpaint import EXEGANInpainter, GRIGInpainter

BAD_BATCHES = (-1, 0, 2.5, "4", True)


def _calls(retouch_models, vsp_model, style_pack, inpaint_models, edit_model):
    """(call object, its value, its options) for one model of each call."""
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    return [(stylert.Retoucher(retouch_models["plain"], "cpu"), 1.0, {}),
            (stylert.Restorer(vsp_model["path"], "cpu"), 0.0, {"seed": 1}),
            (stylert.Stylizer(style_pack, "cpu"), "cartoon", {}),
            (stylert.Inpainter(inpaint_models["exe-gan"], "cpu"), [mask], {}),
            (stylert.Inpainter(inpaint_models["grig"], "cpu"), [mask], {"steps": 1}),
            (stylert.Editor(edit_model["path"], "cpu"), [mask], {})]


@pytest.mark.parametrize("bad", BAD_BATCHES)
def test_every_call_refuses_a_batch_limit_below_one_or_not_an_integer(bad, retouch_models, vsp_model, style_pack,
                                                                      inpaint_models, edit_model):
    photo = np.zeros((64, 64, 3), np.uint8)
    for model, value, options in _calls(retouch_models, vsp_model, style_pack, inpaint_models, edit_model):
        with pytest.raises(stylert.InputError, match=f"max_batch must be an integer >= 1, got {bad!r}"):
            model.process_batch([photo], value, channels="rgb", aligned=True, max_batch=bad, **options)


def test_a_numpy_integer_batch_limit_is_an_integer(inpaint_models):
    m = stylert.Inpainter(inpaint_models["grig"], "cpu")
    photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    a = m.process_batch([photo, photo], [mask, mask], channels="rgb", max_batch=np.int64(1), steps=1)
    b = m.process_batch([photo, photo], [mask, mask], channels="rgb", max_batch=2, steps=1)
    assert all(isinstance(r, stylert.FaceResult) for r in a + b)
    assert np.array_equal(a[0].image, b[0].image) and np.array_equal(a[1].image, b[1].image)


def test_inpainter_opens_each_method_as_its_own_call_class(inpaint_models):
    exe, grig = stylert.Inpainter(inpaint_models["exe-gan"], "cpu"), stylert.Inpainter(inpaint_models["grig"], "cpu")
    assert type(exe) is EXEGANInpainter and type(grig) is GRIGInpainter
    assert isinstance(exe, stylert.Inpainter) and isinstance(grig, stylert.Inpainter)
    assert (exe.method, grig.method) == ("exe-gan", "grig")
    with pytest.raises(stylert.ModelError, match="of method 'grig'"):
        EXEGANInpainter(inpaint_models["grig"], "cpu")
