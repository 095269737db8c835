"""A user's files and the public API, as a photo app would use them: outputs checked before any work,
no silent overwrite, the umask's modes, metadata carried through, 16-bit refused alike, one error
hierarchy, arguments checked by their public names, streams that own their frames, large photos
detected on a downscaled copy, clean exported graphs."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import warnings

import cv2
import numpy as np
import onnx
import pytest
from PIL import Image

import stylert
from stylert.faces.imageio import ImageFileError, read_image, write_image
from stylert.faces.pipeline import FacePipeline


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stylert.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture
def photos(tmp_path, astronaut):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "a.png")
    return folder


def test_output_folder_under_a_file_is_refused_before_any_work(retouch_models, photos, tmp_path):
    (tmp_path / "afile").write_text("x")
    result = _cli("retouch", photos, "-o", tmp_path / "afile" / "out", "--model", retouch_models["plain"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot create the output folder" in result.stderr and "wrote" not in result.stdout


def test_a_failed_write_is_that_files_error_and_the_batch_goes_on(retouch_models, photos, tmp_path, astronaut):
    Image.fromarray(astronaut[:, ::-1]).save(photos / "b.png")
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)  # a folder where a.png's result should go: its write fails
    result = _cli("retouch", photos, "-o", out, "--model", retouch_models["plain"])
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{out / 'a.png'}: cannot write it" in result.stderr and (out / "b.png").is_file()


def test_two_inputs_writing_one_file_are_refused(retouch_models, tmp_path, astronaut):
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        Image.fromarray(astronaut).save(tmp_path / d / "x.png")
    result = _cli("retouch", tmp_path / "d1" / "x.png", tmp_path / "d2" / "x.png", "-o", tmp_path / "out",
                  "--model", retouch_models["plain"])
    assert result.returncode == 2 and "would both be written to" in result.stderr
    assert not (tmp_path / "out" / "x.png").exists()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_image(tmp_path / "o.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_exported_models_follow_the_umask(tmp_path):
    pytest.importorskip("torch")
    from stylert_export.generator import export_generator, from_random_init

    old = os.umask(0o022)
    try:
        export_generator(from_random_init(1, 8, channel_base=64, channel_max=8, w_dim=8, mapping_layers=1),
                         tmp_path / "g.onnx", log=lambda *_: None)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "g.onnx").stat().st_mode) == 0o644


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_16_bit_image_is_refused_alike(tmp_path, suffix, channels):
    image = (np.random.default_rng(0).random((16, 16, channels)) * 65535).astype(np.uint16)
    path = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(path), image[:, :, 0] if channels == 1 else image)
    with pytest.raises(ImageFileError, match="16-bit .*convert it"):
        read_image(path)


def test_exif_and_icc_are_carried_through(retouch_models, tmp_path, astronaut):
    from PIL import ImageCms

    crop = cv2.resize(astronaut[20:230, 120:330], (64, 64))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    exif = Image.Exif()
    exif[0x010F], exif[0x0132], exif[0x0112] = "stylert-camera", "2026:12:01 08:00:00", 6  # make, date, rotate
    src = tmp_path / "in.jpg"
    Image.fromarray(crop).save(src, exif=exif.tobytes(), icc_profile=icc, quality=95)
    r = stylert.Retoucher(retouch_models["plain"], "cpu")
    for dst in (tmp_path / "out.jpg", tmp_path / "out.png"):
        r.process_file(src, dst, aligned=True)
        with Image.open(dst) as im:
            got = im.getexif()
            assert got[0x010F] == "stylert-camera" and got[0x0132] == "2026:12:01 08:00:00"
            assert got.get(0x0112, 1) == 1  # orientation applied to the pixels, so reset
            assert im.info.get("icc_profile") == icc


def test_the_api_refuses_to_overwrite_the_input_unless_told(retouch_models, tmp_path, astronaut):
    crop = cv2.resize(astronaut[20:230, 120:330], (32, 32))
    src = tmp_path / "face.png"
    Image.fromarray(crop).save(src)
    before = src.read_bytes()
    r = stylert.Retoucher(retouch_models["plain"], "cpu")
    with pytest.raises(stylert.InputError, match="would overwrite the input"):
        r.process_file(src, src, aligned=True)
    assert src.read_bytes() == before
    r.process_file(src, src, aligned=True, overwrite=True)
    assert src.read_bytes() != before


def test_output_format_is_checked_before_the_network(retouch_models, tmp_path, astronaut):
    rgba = np.dstack([cv2.resize(astronaut[20:230, 120:330], (32, 32)), np.full((32, 32), 200, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    r = stylert.Retoucher(retouch_models["plain"], "cpu")
    calls = []
    original = r.model.run
    r.model.run = lambda feeds: calls.append(1) or original(feeds)
    with pytest.raises(ImageFileError, match="cannot hold the input's alpha"):
        r.process_file(tmp_path / "a.png", tmp_path / "a.jpg", aligned=True)
    with pytest.raises(ImageFileError, match="cannot write '.heic'"):
        r.process_file(tmp_path / "a.png", tmp_path / "a.heic", aligned=True)
    assert calls == [] and not (tmp_path / "a.jpg").exists()
    result = _cli("retouch", tmp_path / "a.png", "-o", tmp_path / "x.heic", "--model", retouch_models["plain"])
    assert result.returncode == 2 and "cannot write '.heic'" in result.stderr


def test_folders_say_what_they_skip_and_recurse_on_request(retouch_models, photos, tmp_path, astronaut):
    (photos / "notes.txt").write_text("not a photo")
    (photos / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS' AppleDouble file beside a copied a.png
    (photos / "sub").mkdir()
    Image.fromarray(astronaut).save(photos / "sub" / "b.png")
    result = _cli("retouch", photos, "-o", tmp_path / "out", "--model", retouch_models["plain"])
    assert result.returncode == 0, result.stderr
    assert "skipped 1 file(s) that are not" in result.stderr and "1 subfolder(s) (--recursive" in result.stderr
    assert "1 hidden file(s) (names starting with '.')" in result.stderr
    assert not (tmp_path / "out" / "sub").exists()
    result = _cli("retouch", photos, "-o", tmp_path / "out2", "--model", retouch_models["plain"], "--recursive", "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["output"] for r in records} == {str(tmp_path / "out2" / "a.png"), str(tmp_path / "out2" / "sub" / "b.png")}
    assert all(r["error"] is None and len(r["faces"]) == 1 and "network" in r["timings_ms"] for r in records)


def test_an_output_named_like_an_image_but_meant_as_a_folder(retouch_models, photos, tmp_path, capsys):
    """-o naming an existing folder (whatever its extension) or ending in '/' is a folder: the result goes inside, as
    `cp` would put it, never a file with the folder's name (or a failure after the network ran)."""
    from stylert import cli

    (tmp_path / "existing.png").mkdir()
    for output, written in ((tmp_path / "existing.png", tmp_path / "existing.png" / "a.png"),
                            (f"{tmp_path / 'new.png'}/", tmp_path / "new.png" / "a.png")):
        assert cli.main(["retouch", str(photos / "a.png"), "-o", str(output), "--model",
                         str(retouch_models["plain"])]) == 0, capsys.readouterr().err
        assert written.is_file() and written.parent.is_dir()


def test_an_image_of_several_frames_is_read_first_frame_with_a_warning(retouch_models, tmp_path, astronaut, capsys):
    """An animated WebP: its first frame is retouched, and a warning names the file and its frame count."""
    from stylert import cli

    frames = [Image.fromarray(astronaut), Image.fromarray(astronaut[:, ::-1])]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    assert cli.main(["retouch", str(tmp_path / "anim.webp"), "-o", str(tmp_path / "out"), "--model",
                     str(retouch_models["plain"])]) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'anim.webp'}: 2 frames (an animation or a multi-page file): only the first" in err
    with Image.open(tmp_path / "out" / "anim.webp") as out:
        assert getattr(out, "n_frames", 1) == 1 and out.size == frames[0].size


def test_a_damaged_jpeg_is_refused_unless_allowed_and_then_named(retouch_models, tmp_path, astronaut, capsys):
    """A JPEG cut short (its end marker put back) decodes with a grey lower half: refused by default, its file named;
    with --allow-damaged it is retouched and a warning names it."""
    from stylert import cli

    Image.fromarray(astronaut).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2] + b"\xff\xd9")
    args = ["retouch", str(tmp_path / "cut.jpg"), str(tmp_path / "whole.jpg"), "-o", str(tmp_path / "out"),
            "--model", str(retouch_models["plain"])]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'cut.jpg'}: damaged image data" in err and "--allow-damaged" in err
    assert not (tmp_path / "out" / "cut.jpg").exists() and (tmp_path / "out" / "whole.jpg").is_file()
    assert cli.main(["retouch", str(tmp_path / "cut.jpg"), "-o", str(tmp_path / "out"), "--model",
                     str(retouch_models["plain"]), "--allow-damaged"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'cut.jpg'}: damaged image data" in err and "error:" not in err
    assert (tmp_path / "out" / "cut.jpg").is_file()


def test_ctrl_c_reports_what_was_done(retouch_models, photos, tmp_path, astronaut, capsys, monkeypatch):
    from stylert import cli
    from stylert.calls.retouch import Retoucher

    for name in ("b.png", "c.png"):
        Image.fromarray(astronaut).save(photos / name)
    real, seen = Retoucher.process_files, []

    def interrupt_on_second(self, pairs, *args, **kwargs):
        seen.append(pairs)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(self, pairs, *args, **kwargs)

    monkeypatch.setattr(Retoucher, "process_files", interrupt_on_second)
    code = cli.main(["retouch", str(photos), "-o", str(tmp_path / "out"), "--model", str(retouch_models["plain"])])
    assert code == 130 and "interrupted: 1 finished, 0 failed, 2 not started" in capsys.readouterr().err


def test_one_error_hierarchy():
    assert issubclass(stylert.ImageFileError, stylert.InputError) and issubclass(stylert.InputError, stylert.StylertError)
    assert issubclass(stylert.BackendUnavailable, stylert.ModelError)
    assert {"ImageFileError", "InputError", "ModelError", "NoFaceError", "StylertError", "BackendUnavailable",
            "UntrainedWeightsWarning"} <= set(stylert.__all__)


def test_public_arguments_are_checked_by_their_public_names(retouch_models, restore_models, astronaut):
    r = stylert.Retoucher(retouch_models["plain"], providers="cpu")  # a string, not ['c', 'p', 'u']
    assert r.model.backend == "onnxruntime-cpu"
    upper = r.retouch(astronaut[:, :, ::-1], channels="BGR").image
    assert upper.shape == astronaut.shape
    for value, match in ((None, "strength must be a number, got None"), ("0.5", "strength must be a number, got '0.5'"),
                         (float("nan"), "strength must be finite")):
        with pytest.raises(stylert.InputError, match=match):
            r.retouch(astronaut, value, channels="rgb")
    q = stylert.Restorer(restore_models["sharp"], "cpu")
    with pytest.raises(TypeError, match=r"Restorer.restore\(\) got unexpected keyword argument\(s\) \['strength'\]"):
        q.restore(astronaut, channels="rgb", strength=0.5)


@pytest.mark.parametrize("landmarks,match", [
    ([[-50, -60], [-10, -60], [-30, -40], [-45, -20], [-15, -20]], "lie outside the 512x512 image"),
    ([[np.nan, 1]] * 5, "landmarks contain NaN")])
def test_bad_landmarks_are_refused(retouch_models, astronaut, landmarks, match):
    with pytest.raises(stylert.InputError, match=match):
        stylert.Retoucher(retouch_models["plain"], "cpu").retouch(astronaut, channels="rgb", faces=[landmarks])


def test_untrained_models_warn_once_in_the_api(retouch_models, tmp_path):
    path = shutil.copy(retouch_models["plain"], tmp_path / "fresh.onnx")
    with pytest.warns(stylert.UntrainedWeightsWarning, match="random weights"):
        stylert.Retoucher(path, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", stylert.UntrainedWeightsWarning)
        stylert.Retoucher(path, "cpu")  # once per model file


@pytest.mark.parametrize("overlap", [True, False])
def test_stream_owns_its_frames_and_counts_failures(retouch_models, astronaut, overlap):
    from stylert.video.stream import Stream

    r = stylert.Retoucher(retouch_models["plain"], "cpu")
    buffer = astronaut.copy()
    with Stream(r, 1.0, channels="RGB", mode="queue", overlap=overlap) as stream:
        stream.submit(buffer)
        buffer[:] = 0  # the app reuses its capture buffer at once
        stream.submit(np.zeros((8, 8), np.uint8))  # a bad frame: raised from get(), never from submit()
        blank = np.full((64, 64, 3), 127, np.uint8)
        stream.submit(blank)  # no face: comes back as a copy
        first = stream.get(timeout=60)
        with pytest.raises(stylert.InputError):
            stream.get(timeout=60)
        third = stream.get(timeout=60)
    assert first.image.mean() > 50 and len(first.face_ids) == 1
    assert third.image is not blank and np.array_equal(third.image, blank)
    assert stream.stats.failed == 1 and stream.stats.delivered == 2 and stream.pending() == 0
    with pytest.raises(stylert.InputError, match="channels"):
        Stream(r, 1.0, channels="rgba")


def test_large_photos_are_detected_on_a_downscaled_copy(astronaut):
    big = cv2.resize(astronaut, (2600, 2600), interpolation=cv2.INTER_LANCZOS4)
    full = FacePipeline(256, detect_size=None).detect(big)
    small = FacePipeline(256, detect_size=1280).detect(big)
    assert full and small  # (full size also finds a low-score false face in the suit here)
    a, b = (max(f, key=lambda face: face.size).landmarks for f in (full, small))
    iod = np.linalg.norm(a[0] - a[1])
    err = np.linalg.norm(a - b, axis=1).max()
    print(f"downscaled detection: landmark error {err:.2f} px = {err / iod:.2%} of the eye distance")
    assert err < 0.03 * iod


def test_checkpoint_tensors_with_grad_export(tmp_path):
    torch = pytest.importorskip("torch")
    from stylert_export.checkpoints import read_file
    from stylert_export.generator import export_generator, from_checkpoint
    from conftest import FIXTURES

    ckpt = read_file(FIXTURES / "rosinality_32.pt")
    ckpt["latent_avg"] = ckpt["latent_avg"].clone().requires_grad_(True) * 1.0  # computed outside no_grad
    assert ckpt["latent_avg"].requires_grad and ckpt["latent_avg"].grad_fn is not None
    torch.save({k: v for k, v in ckpt.items() if k != "args"}, tmp_path / "grad.pt")
    assert read_file(tmp_path / "grad.pt")["latent_avg"].requires_grad is False
    export_generator(from_checkpoint(tmp_path / "grad.pt"), tmp_path / "g.onnx", log=lambda *_: None)
    model = onnx.load(str(tmp_path / "g.onnx"))
    assert not any(len(n.metadata_props) for n in model.graph.node)  # no exporter stack traces or class paths
    raw = (tmp_path / "g.onnx").read_bytes()
    import stylert_export

    assert b"pkg.torch" not in raw and os.path.dirname(stylert_export.__file__).encode() not in raw
    assert {p.key for p in model.metadata_props} >= {"stylert.format", "stylert.call", "stylert.version"}


def test_cli_details(retouch_models, tmp_path):
    version = _cli("-V")
    assert version.returncode == 0 and version.stdout.strip() == f"stylert {stylert.__version__}"
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])]))
    onnx.save(plain, tmp_path / "plain.onnx")
    info = _cli("info", tmp_path / "plain.onnx")
    assert info.returncode == 0 and "without stylert metadata" in info.stdout and "input  x [n, 3] float32" in info.stdout


def test_process_batch_runs_photos_together_with_per_photo_errors(retouch_models, astronaut):
    r = stylert.Retoucher(retouch_models["plain"], "cpu")
    photos = [astronaut, np.zeros((8, 8), np.uint8), astronaut[:, ::-1].copy(), np.zeros((300, 300, 3), np.uint8)]
    calls = []
    run = r.model.run
    r.model.run = lambda feeds: calls.append(len(feeds["image"])) or run(feeds)
    results = r.process_batch(photos, 0.7, channels="rgb", max_batch=4)
    assert calls == [2]  # both photos' faces in one network run
    assert isinstance(results[1], stylert.InputError) and isinstance(results[3], stylert.NoFaceError)
    for got, photo in ((results[0], astronaut), (results[2], photos[2])):
        alone = r.retouch(photo, 0.7, channels="rgb")
        assert len(got.faces) == 1 and np.abs(got.image.astype(int) - alone.image.astype(int)).max() <= 1
        assert {"detect", "align", "network", "paste"} <= set(got.timings_ms)
    with pytest.raises(TypeError, match="unexpected keyword"):
        r.process_batch([astronaut], 1.0, channels="rgb", fidelity=0.3)


def test_process_batch_keeps_each_faces_seeded_draws(vsp_model, astronaut):
    """VSP noise (and stylize --seed codes) are drawn per face position within its photo, so batching a
    photo behind another one's faces draws the same noise for it as running it alone."""
    q = stylert.Restorer(vsp_model["path"], "cpu")
    crop = cv2.resize(astronaut[20:230, 120:330], (32, 32))
    crops = stylert.faces.pipeline.to_network([crop[:, ::-1], crop])
    seen = []
    run = q.model.run
    q.model.run = lambda feeds: seen.append(feeds["noise"].copy()) or run(feeds)
    q.process_batch([crop[:, ::-1].copy(), crop], 0.0, channels="rgb", aligned=True, seed=5)
    q.restore(crop, 0.0, channels="rgb", aligned=True, seed=5)
    batched, alone = seen
    assert batched.shape[0] == 2 and np.array_equal(batched[1], alone[0]) and np.array_equal(batched[0], alone[0])
    assert not np.array_equal(q._feeds(crops, 0.0, seed=5)["noise"][1], alone[0])  # position 1 of one photo differs


def test_cli_batch_writes_what_single_files_write(retouch_models, photos, tmp_path, astronaut):
    Image.fromarray(astronaut[:, ::-1]).save(photos / "b.png")
    (photos / "c.png").write_bytes(b"not an image")
    one = _cli("retouch", photos, "-o", tmp_path / "one", "--model", retouch_models["plain"])
    two = _cli("retouch", photos, "-o", tmp_path / "two", "--model", retouch_models["plain"], "--batch", "3")
    assert one.returncode == two.returncode == 1 and "c.png" in two.stderr, two.stderr
    for name in ("a.png", "b.png"):
        a, b = (np.asarray(Image.open(tmp_path / d / name)).astype(int) for d in ("one", "two"))
        assert np.abs(a - b).max() <= 1


def test_help_shows_defaults_and_placeholders():
    retouch = _cli("retouch", "--help").stdout
    assert "--strength S" in retouch and "(default: 1.0)" in retouch and "--detect-size PX" in retouch
    stylize = _cli("stylize", "--help").stdout
    assert "--pack PACK" in stylize and "--style NAME" in stylize
