"""What every call shares through the one whole-photo pipeline (faces/pipeline.FaceModel): the batch limit is
refused the same way by each call, and `stylert.Inpainter` opens each inpainting method as its own call class."""
import gc
import warnings

import cv2
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


def test_every_call_checks_its_controls_beside_the_face_options(retouch_models, vsp_model, style_pack,
                                                                inpaint_models, edit_model):
    """check() (the service and the CLI call it before any work) takes what process() takes: the face options
    beside the call's controls (it passed them to the network step, which took them for unknown: a 500)."""
    for model, value, options in _calls(retouch_models, vsp_model, style_pack, inpaint_models, edit_model):
        for face in ({"largest_face": True}, {"only_center_face": True}, {"aligned": True}, {"faces": None}):
            model.check(value, **options, **face)
        with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['largest'\]"):
            model.check(value, **options, largest=True)


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


def test_hostile_inputs_are_named_errors(retouch_models, style_pack, tmp_path, astronaut, capsys):
    """Found by a hostile re-run: each is one named error, before any work, and no input is written over."""
    from stylert import cli
    from stylert.calls.edit import load_directions
    from stylert.runtime.model import read_meta

    r = stylert.Retoucher(retouch_models["plain"], "cpu")
    for strength in (1e308, 2 ** 200, np.float64(1e39)):  # finite as float64, not as the graphs' float32
        with pytest.raises(stylert.InputError, match="strength must be within"):
            r.check(strength)
    with pytest.raises(stylert.InputError, match=r"\[5, 2\] landmarks"):
        r.retouch(astronaut, channels="rgb", faces=["x"])
    s = stylert.Stylizer(style_pack, "cpu")
    face = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(stylert.InputError, match="mix_layer must be an integer"):
        s.stylize(face, "cartoon", channels="rgb", aligned=True, seed=1, mix_layer="3")
    with pytest.raises(stylert.InputError, match=r"labels: values 0\.\.260"):  # 260 would wrap to 4 (eyes)
        s.stylize(face, "cartoon", channels="rgb", aligned=True, regions=["eye"],
                  labels=np.full((32, 32), 260, np.int64) * (np.arange(32) > 0))
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 512), np.float32))
    with open(tmp_path / "bomb.npy", "wb") as f:  # a header claiming 100,000,000 x 512 over 2 KB of data
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (100_000_000, 512)})
        f.write(bytes(2048))
    with pytest.raises(stylert.InputError, match="bomb.npy: not a plain numpy file"):
        load_directions(tmp_path / "bomb.npy")
    np.save(tmp_path / "smile.npy", np.full(512, 1e300))
    with pytest.raises(stylert.InputError, match="out-of-float32"):
        load_directions(tmp_path / "smile.npy")
    np.savez(tmp_path / "dirs.npz", smile=np.ones(512, np.float32))
    whole = (tmp_path / "dirs.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[:len(whole) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(stylert.InputError, match="cut.npz: not a readable numpy file .BadZipFile"):
            load_directions(tmp_path / "cut.npz")
        gc.collect()  # numpy left the file of a zip that did not open to the collector: "unclosed file"
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    with pytest.raises(stylert.ModelError, match="stylert.resolution is not an integer"):
        read_meta({"stylert.resolution": "9" * 5000}, "m.onnx", "resolution", int)

    (tmp_path / "in" / "sub").mkdir(parents=True)  # -r with the output inside the inputs: in/a.png -> in/sub/a.png
    for path in (tmp_path / "in" / "a.png", tmp_path / "in" / "sub" / "a.png"):
        cv2.imwrite(str(path), astronaut[:, :, ::-1])
    before = (tmp_path / "in" / "sub" / "a.png").read_bytes()
    code = cli.main(["retouch", "-r", str(tmp_path / "in"), "-o", str(tmp_path / "in" / "sub"), "--model",
                     str(retouch_models["plain"])])
    assert code == 2 and "choose an output folder outside the inputs" in capsys.readouterr().err
    assert (tmp_path / "in" / "sub" / "a.png").read_bytes() == before
