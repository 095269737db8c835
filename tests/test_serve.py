"""`stylert serve` (Ray Serve) on a local Ray with random-init models (a retoucher, a restorer, a style pack, an
EXE-GAN inpainter, a FACEMUG editor): results equal the CLI's files byte for byte, concurrent requests are batched,
bad requests get 4xx and the service keeps serving, the demo page works in a real browser, Ctrl-C stops everything,
and no Ray process outlives a test. With pytest-xdist the file runs on one worker (`--dist loadfile`): one service
for the module. `stylert batch` is tested in test_batch.py."""
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray", reason="stylert serve/batch need Ray: pip install 'stylert[serve]'")
pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from serve_load import Service, free_port, request, session_processes  # noqa: E402

from stylert.cli import main  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "stylert.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def service(retouch_models, restore_models, style_pack, inpaint_models, edit_model):
    """Five calls, one replica each (0.4 CPU each: 2 CPUs hold them), batching made easy to observe
    (requests wait up to 300 ms for company) and a 1 MB body limit; stopped with Ctrl-C at the end of
    the module, which must leave nothing running."""
    svc = Service([retouch_models["plain"], restore_models["sharp"], style_pack, inpaint_models["exe-gan"], edit_model["path"]],
                  "--max-batch", "4", "--batch-wait-ms", "300", "--max-body-mb", "1", "--cpus-per-replica", "0.4")
    yield svc
    status = svc.stop()
    assert status == 0, svc.output()[-3000:]
    assert "stylert serve: shutting down" in svc.output()
    assert svc.leftover == [] and session_processes(svc.proc.pid) == []


def test_serve_answers_concurrent_requests_batched_and_equal_to_the_cli(service, photo_library):
    cli_out, photos = photo_library["cli"], photo_library["photos"]
    jobs = [("a.png", "image/png"), ("b.jpg", "image/jpeg"), ("c.webp", "image/webp")] * 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: request(f"{service.url}/retouch?strength=0.7",
                                                    (photos / job[0]).read_bytes()), jobs))
    for (name, media), (status, headers, body) in zip(jobs, answers):
        assert status == 200, body[:300]
        assert headers["Content-Type"] == media and body == (cli_out / name).read_bytes(), name
        faces = json.loads(headers["X-Stylert-Faces"])
        assert len(faces) == 1 and len(faces[0]["landmarks"]) == 5
        assert {"decode", "detect", "align", "network", "paste", "encode"} <= set(json.loads(headers["X-Stylert-Timings"]))
    assert max(int(h["X-Stylert-Batch"]) for _, h, _ in answers) > 1  # requests shared network runs

    status, _, body = request(f"{service.url}/retouch?strength=0.7", (photos / "a.png").read_bytes(),
                              headers={"Accept": "application/json"})
    reply = json.loads(body)
    assert status == 200 and reply["format"] == "png" and len(reply["faces"]) == 1 and reply["batch"] >= 1
    assert base64.b64decode(reply["image"]) == (cli_out / "a.png").read_bytes()
    status, headers, body = request(f"{service.url}/retouch?strength=0.7&format=png", (photos / "b.jpg").read_bytes())
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(body)).format == "PNG" and Image.open(io.BytesIO(body)).size == (512, 512)


@pytest.mark.parametrize("path, body, status, message", [
    ("/retouch", "e_text.png", 400, "request body: not an image file"),
    ("/retouch", "f_cut.png", 400, "request body: truncated or corrupt image"),
    ("/retouch", "bomb", 400, "request body: over the pixel limit"),
    ("/retouch", "line", 400, "request body: "),
    ("/retouch", "cut_jpeg", 400, "request body: "),
    ("/retouch", "d_noface.png", 422, "no face found"),
    ("/retouch?strength=-1", "a.png", 400, "strength must be a finite number >= 0, got -1.0"),
    ("/retouch?strength=nan", "a.png", 400, "strength must be finite"),
    ("/retouch?strength=x", "a.png", 400, "strength must be a number, got 'x'"),
    ("/retouch?fidelity=1", "a.png", 400, "unknown parameter(s) fidelity; retouch takes strength"),
    ("/retouch?only_center_face=1&largest_face=1", "a.png", 400, "exclude each other"),
    ("/retouch?format=gif", "a.png", 400, "format must be one of png"),
    ("/retouch", "", 400, "request body: empty"),
    ("/retouch", "big", 413, "request body over the 1 MB limit"),
    ("/generate", "a.png", 404, "no route POST /generate; routes: GET / (the demo page), GET /healthz, GET /models, "
                                "POST /retouch"),
    ("/stylize", "a.png", 404, "name the style: POST /stylize/<style>"),
    ("/stylize/nope", "a.png", 400, "nope"),
    ("/stylize/cartoon?style=x", "a.png", 400, "the style is part of the path"),
    ("/restore?fidelity=2", "a.png", 400, "fidelity"),
    ("/restore?seed=1.5", "a.png", 400, "seed must be an integer, got '1.5'"),
    ("/retouch/extra", "a.png", 404, "no route"),
])
def test_serve_refuses_bad_requests_and_keeps_serving(service, photo_library, path, body, status, message, tmp_path):
    photos = photo_library["photos"]
    if body == "bomb":  # a small PNG whose header claims 400 megapixels
        Image.new("L", (20000, 20000)).save(tmp_path / "bomb.png")
        data = (tmp_path / "bomb.png").read_bytes()
    elif body == "line":  # a PNG of 100,000,000 x 1 pixels: exactly at the pixel limit, too large to decode
        Image.new("1", (100_000_000, 1)).save(tmp_path / "line.png")
        data = (tmp_path / "line.png").read_bytes()
    elif body == "cut_jpeg":  # a JPEG cut short, its end-of-image marker put back: decodes grey unless refused
        data = (photos / "b.jpg").read_bytes()
        data = data[:len(data) // 2] + b"\xff\xd9"
    else:
        data = np.random.default_rng(0).bytes(3 * 2 ** 20) if body == "big" else (photos / body).read_bytes() if body else b""
    got, headers, reply = request(service.url + path, data)
    assert got == status and json.loads(reply)["error"].find(message) >= 0, reply
    ok, _, _ = request(f"{service.url}/retouch", (photos / "a.png").read_bytes())
    assert ok == 200


def test_serve_takes_the_face_options(service, photo_library):
    """A face option alone (largest_face=1) is the faces to work on, not a control of the network step (it was
    passed to the step's check: a 500)."""
    photo, want = (photo_library["photos"] / "a.png").read_bytes(), (photo_library["cli"] / "a.png").read_bytes()
    for query in ("largest_face=1", "only_center_face=true", "largest_face=no"):
        status, _, body = request(f"{service.url}/retouch?strength=0.7&{query}", photo)
        assert status == 200 and body == want, (query, body[:300])  # one face: the default's result


def test_serve_says_what_the_cli_warns_about_an_image(service, photo_library):
    """An animated WebP: its first frame is retouched, and the reply says so as the CLI's warning line does."""
    photo = Image.open(photo_library["photos"] / "a.png")
    animation = io.BytesIO()
    photo.save(animation, "WEBP", save_all=True, append_images=[photo.transpose(Image.FLIP_LEFT_RIGHT)], lossless=True)
    status, headers, body = request(f"{service.url}/retouch?strength=0.7", animation.getvalue())
    assert status == 200 and headers["X-Stylert-Warning"].startswith("request body: 2 frames"), body[:300]
    status, _, body = request(f"{service.url}/retouch?strength=0.7", animation.getvalue(),
                              headers={"Accept": "application/json"})
    assert status == 200 and json.loads(body)["warning"].startswith("request body: 2 frames")
    status, headers, _ = request(f"{service.url}/retouch?strength=0.7", (photo_library["photos"] / "a.png").read_bytes())
    assert status == 200 and "X-Stylert-Warning" not in headers


@pytest.mark.parametrize("call, query, options", [
    ("restore", "fidelity=0.3&seed=2", ["--fidelity", 0.3, "--seed", 2]),
    ("stylize/cartoon", "seed=3&mix_layer=2", ["--style", "cartoon", "--seed", 3, "--mix-layer", 2]),
])
def test_serve_routes_restore_and_stylize_like_the_cli(service, photo_library, restore_models, style_pack, tmp_path, call,
                                                       query, options):
    model = ["--model", restore_models["sharp"]] if call == "restore" else ["--pack", style_pack]
    cli = _cli(call.split("/")[0], photo_library["photos"] / "a.png", "-o", tmp_path, *model, *options)
    assert cli.returncode == 0, cli.stderr
    status, _, body = request(f"{service.url}/{call}?{query}", (photo_library["photos"] / "a.png").read_bytes())
    assert status == 200 and body == (tmp_path / "a.png").read_bytes()


def multipart(files: dict[str, bytes]) -> tuple[bytes, dict]:
    """A multipart/form-data body of files (as a browser's FormData sends it) and its header."""
    boundary = "stylert-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def inpaint_case(tmp_path_factory, photo_library, inpaint_models, astronaut):
    """A mouth mask and an exemplar for b.jpg (JPEGs: a form of three files stays under the 1 MB limit), and what
    `stylert inpaint` writes with them (and with --region)."""
    root = tmp_path_factory.mktemp("inpaint_case")
    mask = np.zeros(astronaut.shape[:2], np.uint8)
    mask[150:185, 252:332] = 255  # b.jpg is the astronaut mirrored
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(astronaut).save(root / "exemplar.jpg", quality=85)
    out = {}
    for name, args in {"mask": ["--mask", root / "mask.png", "--exemplar", root / "exemplar.jpg"],
                       "region": ["--region", "eyes"]}.items():
        result = _cli("inpaint", photo_library["photos"] / "b.jpg", "-o", root / f"inpaint_{name}.jpg", "--model",
                      inpaint_models["exe-gan"], "--seed", 3, *args)
        assert result.returncode == 0, result.stderr
        out[f"cli_{name}"] = (root / f"inpaint_{name}.jpg").read_bytes()
    return {"mask": (root / "mask.png").read_bytes(), "exemplar": (root / "exemplar.jpg").read_bytes(), **out}


def test_serve_inpaint_forms_and_regions_like_the_cli(service, photo_library, inpaint_case):
    photo = (photo_library["photos"] / "b.jpg").read_bytes()
    body, headers = multipart({"image": photo, "mask": inpaint_case["mask"], "exemplar": inpaint_case["exemplar"]})
    status, _, reply = request(f"{service.url}/inpaint?seed=3", body, headers)
    assert status == 200 and reply == inpaint_case["cli_mask"], reply[:300]
    status, _, reply = request(f"{service.url}/inpaint?seed=3&region=eyes", photo)
    assert status == 200 and reply == inpaint_case["cli_region"], reply[:300]
    small = io.BytesIO()
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small, "PNG")
    empty = io.BytesIO()
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(empty, "PNG")
    noface = (photo_library["photos"] / "d_noface.png").read_bytes()
    bomb = io.BytesIO()
    Image.new("L", (20000, 20000)).save(bomb, "PNG")  # a mask whose header claims 400 megapixels
    bad = [({"image": photo}, "", 400, "inpaint needs one mask"),
           ({"image": photo, "mask": small.getvalue()}, "", 400, "the mask is 10x10, the photo 512x512"),
           ({"image": photo, "mask": empty.getvalue()}, "", 400, "the mask is empty"),
           ({"image": photo, "mask": b"not a png"}, "", 400, "mask: not a readable mask image"),
           ({"image": photo, "mask": bomb.getvalue()}, "", 400, "mask: "),
           ({"image": photo, "mask": inpaint_case["mask"][:200]}, "", 400, "mask: "),
           ({"image": photo, "mask": inpaint_case["mask"], "other": b"x"}, "", 400, "unknown form field(s) other"),
           ({"image": photo, "mask": inpaint_case["mask"], "exemplar": noface}, "", 422, "exemplar: no face found"),
           ({"image": photo, "mask": inpaint_case["mask"]}, "&region=eyes", 400, "inpaint needs one mask"),
           ({"image": photo, "mask": inpaint_case["mask"]}, "&steps=2", 400, "steps are GRIG's")]
    for files, query, want, message in bad:
        body, headers = multipart(files)
        status, _, reply = request(f"{service.url}/inpaint?seed=1{query}", body, headers)
        assert status == want and message in json.loads(reply)["error"], (files.keys(), reply)
    status, _, reply = request(f"{service.url}/inpaint?region=ears", photo)
    assert status == 400 and "unknown face region 'ears'" in json.loads(reply)["error"]
    status, _, reply = request(f"{service.url}/inpaint?region=eyes", noface)
    assert status == 422 and "no face found" in json.loads(reply)["error"]


def test_serve_edit_takes_guidance_files_like_the_cli(service, photo_library, inpaint_case, edit_model, tmp_path):
    photo = photo_library["photos"] / "b.jpg"
    sketch = np.zeros((512, 512), np.uint8)
    sketch[160:168, 260:320] = 255
    Image.fromarray(sketch).save(tmp_path / "sketch.png")
    (tmp_path / "mask.png").write_bytes(inpaint_case["mask"])
    cli = _cli("edit", photo, "-o", tmp_path / "out.jpg", "--model", edit_model["path"], "--mask", tmp_path / "mask.png",
               "--sketch", tmp_path / "sketch.png", "--seed", 4)
    assert cli.returncode == 0, cli.stderr
    body, headers = multipart({"image": photo.read_bytes(), "mask": inpaint_case["mask"],
                               "sketch": (tmp_path / "sketch.png").read_bytes()})
    status, _, reply = request(f"{service.url}/edit?seed=4", body, headers)
    assert status == 200 and reply == (tmp_path / "out.jpg").read_bytes(), reply[:300]
    body, headers = multipart({"image": photo.read_bytes(), "mask": inpaint_case["mask"], "semantic": b"junk"})
    status, _, reply = request(f"{service.url}/edit", body, headers)
    assert status == 400 and "semantic: not a readable label map" in json.loads(reply)["error"]
    status, _, reply = request(f"{service.url}/edit?attribute=smile", photo.read_bytes())
    assert status == 400 and "unknown parameter(s) attribute; edit takes" in json.loads(reply)["error"]


def test_serve_health_models_and_methods(service, retouch_models):
    status, _, body = request(service.url + "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "models": dict.fromkeys(
        ["retouch", "restore", "stylize", "inpaint", "edit"], "ok")}
    status, _, body = request(service.url + "/models")
    models = json.loads(body)
    info = models["retouch"]
    assert status == 200 and info["resolution"] == 32 and info["trained"] is False and info["max_batch"] == 4
    assert info["path"] == str(retouch_models["plain"]) and info["backend"]
    assert models["stylize"]["styles"] == ["cartoon", "impasto"] and models["restore"]["call"] == "restore"
    assert models["inpaint"]["method"] == "exe-gan"
    status, _, body = request(service.url + "/retouch")
    assert status == 405 and "POST" in json.loads(body)["error"]


def test_serve_refuses_bad_setup_before_starting_ray(retouch_models, tmp_path, capsys):
    """Refused in the command itself, before Ray starts (run in this process: nothing here starts Ray)."""
    model = str(retouch_models["plain"])
    (tmp_path / "x.onnx").write_bytes(b"junk")
    for argv, message in ((["--replicas", "0"], "--replicas must be >= 1"),
                          ([str(tmp_path / "x.onnx")], "not a readable ONNX model"),
                          ([model], "are both retouch models"),
                          (["--address", f"127.0.0.1:{free_port()}"], "no Ray cluster answers there")):
        assert main(["serve", model, *argv]) == 2
        assert message in capsys.readouterr().err, argv


ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run "
                                              "installs it)")
def test_demo_page_runs_a_photo_and_shows_errors(service, astronaut, tmp_path):
    """The demo page in a real browser (Debian's Chromium, driven by Playwright): upload the astronaut, move the
    strength slider, see the result (shown, different from the input) and the per-stage timings; upload a file that
    is not an image and see the service's one line. Nothing is loaded from another host."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium with Playwright "
                                                                 "(pip install playwright; `make test` installs it)")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    (tmp_path / "notes.png").write_text("this is not an image")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(service.url + "/")
            assert page.title() == "stylert demo"
            page.wait_for_function("document.querySelector('#call').options.length > 0")
            assert page.locator("#call").input_value() == "retouch"
            assert "random weights" in page.locator("#models").inner_text()

            page.set_input_files("#photo", str(photo))
            page.wait_for_function("document.querySelector('#after').src.startsWith('data:image')", timeout=120_000)
            first = page.locator("#after").get_attribute("src")
            slider = page.locator("#control-strength")
            slider.focus()
            for _ in range(8):
                page.keyboard.press("ArrowLeft")  # strength 1.0 -> 0.6
            assert page.locator("#control-strength").input_value() == "0.6"
            page.wait_for_function(f"document.querySelector('#after').src !== {first!r}", timeout=120_000)
            page.wait_for_function("document.querySelector('#after').naturalWidth > 0")
            src = page.locator("#after").get_attribute("src")
            result = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
            assert result.shape == astronaut.shape and (result != astronaut).any(axis=2).mean() > 0.02
            stages = page.locator("#timings tbody td:first-child").all_inner_texts()
            assert {"decode", "detect", "align", "network", "paste", "encode"} <= set(stages)
            assert page.locator("#faces").inner_text() == "1 face found."
            assert page.evaluate("document.querySelector('#after').getBoundingClientRect().width") > 100
            shot = os.environ.get("STYLERT_DEMO_SCREENSHOT")  # docs/pages/img/demo.png is made this way
            page.screenshot(path=shot or str(tmp_path / "demo.png"), full_page=True)

            page.set_input_files("#photo", str(tmp_path / "notes.png"))
            page.wait_for_function("document.querySelector('#message').textContent.includes('not an image')",
                                   timeout=60_000)
            assert page.locator("#message").inner_text() == "request body: not an image file (or a format Pillow " \
                                                            "cannot read)"
            others = [url for url in requests if not url.startswith((service.url, "data:", "blob:"))]
            assert others == []  # nothing loaded from another host (the photo and the result are local URLs)
        finally:
            browser.close()


def test_serve_survives_a_killed_replica(service, photo_library):
    """SIGKILL the retouch replica: Ray Serve starts another, the command keeps running, and the first
    answer after the restart is again byte-identical to the CLI's (last in the module: it disturbs)."""
    body = (photo_library["photos"] / "a.png").read_bytes()
    status, headers, _ = request(f"{service.url}/retouch?strength=0.7", body)
    pid = int(headers["X-Stylert-Replica"].split("@")[0])
    os.kill(pid, 9)
    answers = []
    for _ in range(120):
        status, headers, reply = request(f"{service.url}/retouch?strength=0.7", body)
        answers.append(status)
        if status == 200:
            break
        assert status == 503 and "retry" in json.loads(reply)["error"], reply
        time.sleep(0.5)
    assert status == 200 and reply == (photo_library["cli"] / "a.png").read_bytes(), answers
    assert int(headers["X-Stylert-Replica"].split("@")[0]) != pid and service.proc.poll() is None
