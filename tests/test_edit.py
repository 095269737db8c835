"""FACEMUG multimodal editing (thesis ch. 6): its modules against the equations, the style encoder's checkpoint
layout (e4e_trainer's), the graph against PyTorch with every guidance optional, and `stylert.Editor` /
`stylert edit` on a real photo: nothing outside the mask changes, bad guidance is one line."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import stylert
from conftest import rel_error
from stylert.calls.edit import Editor, load_directions
from stylert.errors import InputError
from stylert.faces.imageio import read_image

torch = pytest.importorskip("torch")


def tiny_config():
    from stylert_export.facemug import FACEMUGConfig

    return FACEMUGConfig(size=32, bank_resolution=32, channels={4: 256, 8: 128, 16: 64, 32: 32},
                         encoder_units=(1, 1, 1, 1), encoder_input=32, aggregation_channels=8)


def test_aggregation_is_a_per_pixel_softmax_over_modalities():
    """Eq. 6.16-6.17 by hand: scores from the shared block, softmax across the modalities at each pixel."""
    from stylert_export.facemug import MODALITIES, MultimodalAggregation

    agg = MultimodalAggregation(6).eval()
    g = torch.Generator().manual_seed(0)
    inputs = {name: torch.randn(2, c, 9, 9, generator=g) for name, c in MODALITIES}
    inputs["sketch"] = torch.zeros(2, 1, 9, 9)  # an absent modality: zeros, still scored (as trained)
    with torch.no_grad():
        feats = [agg.extract[name](inputs[name]) for name, _ in MODALITIES]
        scores = torch.stack([agg.score(f) for f in feats])  # [n, B, 1, H, W]
        weights = torch.exp(scores) / torch.exp(scores).sum(0)
        want = sum(w * f for w, f in zip(weights, feats))
        got = agg(inputs)
    assert rel_error(got, want) < 1e-6 and torch.allclose(weights.sum(0), torch.ones(1))


def test_latent_warping_is_four_code_to_code_blocks_from_the_source():
    """Eq. 6.2 / 6.15: Delta_0 = w^so, Delta_i = block_i(Delta_{i-1}, w^r), w^wa = Delta_4 + w^so; each block is
    LayerNorm(a^c + a^p) * (1 + xi) + mu with xi, mu from w^r."""
    from stylert_export.facemug import LatentWarping

    torch.manual_seed(1)
    h = LatentWarping(16, 4).eval()
    w_so, w_ta = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    with torch.no_grad():
        delta = w_so
        for block in h.blocks:
            x = block.pixelnorm(delta)
            r = w_ta - w_so
            k, v, q = block.k_matrix(x), block.v_matrix(x), block.q_matrix(r).transpose(1, 2)
            a_c = torch.softmax(k @ q / math.sqrt(18), dim=-1) @ v
            a_p = block.attention_layer(x, r)
            delta = torch.nn.functional.layer_norm(a_c + a_p, (16,)) * (1 + block.gamma_(r)) + block.beta_(r)
        want = delta + w_so
        got = h(w_ta - w_so, w_so)
    assert rel_error(got, want) < 1e-6
    assert [b.q_matrix.in_features for b in h.blocks] == [16] * 4  # the condition is w^r alone: no time step


def test_attribute_step_and_composite_follow_eq_6_3_and_6_1():
    """Eq. 6.3: the codes reaching the bank and the decoder are w-hat + eps w^d; Eq. 6.1: the output is the refined
    prediction inside the mask and the input outside it."""
    from stylert_export.facemug import random_facemug

    model = random_facemug(tiny_config(), seed=2)
    g = torch.Generator().manual_seed(3)
    b, r = 2, model.cfg.size
    mask = (torch.rand(b, 1, r, r, generator=g) < 0.3).float()
    feeds = dict(image=torch.rand(b, 3, r, r, generator=g) * 2 - 1, mask=mask,
                 sketch=(torch.rand(b, 1, r, r, generator=g) < 0.1).float(),
                 semantic=torch.nn.functional.one_hot(torch.randint(0, 19, (b, r, r), generator=g), 19)
                 .permute(0, 3, 1, 2).float(), color=torch.zeros(b, 3, r, r), presence=torch.ones(b, 4),
                 exemplar=torch.rand(b, 3, r, r, generator=g) * 2 - 1, z=torch.randn(b, 512, generator=g),
                 alpha=torch.ones(b), direction=torch.randn(b, model.cfg.num_ws, 512, generator=g),
                 strength=torch.tensor([0.5, -2.0]), noise=torch.randn(b, model.noise_size, generator=g))
    seen = {}
    hooks = [model.warp.register_forward_hook(lambda m, args, out: seen.update(w_hat=out)),
             model.refine.register_forward_pre_hook(lambda m, args: seen.update(w_star=args[1])),
             model.refine.register_forward_hook(lambda m, args, out: seen.update(pred=out))]
    with torch.no_grad():
        out = model(**feeds)
    for hook in hooks:
        hook.remove()
    want = seen["w_hat"] + feeds["strength"].reshape(-1, 1, 1) * feeds["direction"]
    assert rel_error(seen["w_star"], want) < 1e-6
    assert rel_error(out, feeds["image"] * (1 - mask) + seen["pred"] * mask) < 1e-6
    assert torch.equal(out[mask.expand_as(out) == 0], feeds["image"][mask.expand_as(out) == 0])


def test_style_encoder_loads_from_e4e_trainers_checkpoint(tmp_path):
    """e4e_trainer saves pSp-layout checkpoints (encoder.*, decoder.* = its StyleGAN2 in rosinality names,
    latent_avg); FACEMUG's encoder reads 26 channels (image, sketch, semantic one-hot, colour)."""
    from stylert_export.edit_export import from_encoder
    from stylert_export.facemug import random_facemug
    from test_vsp import _to_rosinality

    src = random_facemug(tiny_config(), 4)
    enc = {f"encoder.{k}": v for k, v in src.encoder.state_dict().items() if k != "latent_avg"}
    dec = {f"decoder.{k}": v for k, v in _to_rosinality(src.bank.state_dict(), src.bank.cfg).items()}
    path = tmp_path / "facemug_e4e.pt"
    torch.save({"state_dict": {**enc, **dec}, "opts": {"encoder_type": "Encoder4Editing", "in_channel": 26,
                                                       "start_from_latent_avg": True},
                "latent_avg": src.encoder.latent_avg.clone()}, path)
    loaded = from_encoder(path, seed=9, resolution=32, aggregation_channels=8).model
    x = torch.rand(2, 26, 32, 32) * 2 - 1
    ws = torch.randn(2, loaded.cfg.num_ws, 512)
    with torch.no_grad():
        assert rel_error(loaded.encoder(x), src.encoder(x)) < 1e-6
        assert rel_error(loaded.bank(ws), src.bank(ws)) < 1e-5
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in enc.items()}}, tmp_path / "bad.pt")
    from stylert_export.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="needs 'encoder.styles"):
        from_encoder(tmp_path / "bad.pt", seed=0)


def test_graph_matches_pytorch_and_every_guidance_is_optional(edit_model):
    from stylert.runtime import open_model
    from stylert.runtime.feeds import feeds_for
    from stylert_export.edit_export import rebuild_reference

    model = open_model(edit_model["path"], "cpu")
    assert [s.name for s in model.inputs] == ["image", "mask", "sketch", "semantic", "color", "presence", "exemplar",
                                               "z", "alpha", "direction", "strength", "noise"]
    ref = rebuild_reference(edit_model["path"])
    rng = np.random.default_rng(5)
    for batch in (1, 3):
        feeds = feeds_for(model.metadata, batch)
        feeds["presence"] = (rng.random((batch, 4)) < 0.5).astype(np.float32)
        feeds["sketch"] = (rng.random(feeds["sketch"].shape) < 0.1).astype(np.float32)
        got = model.run(feeds)["edited"]
        with torch.no_grad():
            want = ref(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
        err = rel_error(got, want)
        print(f"FACEMUG batch {batch}: ONNX Runtime vs PyTorch relative error {err:.2e}")
        assert err < 1e-4
    feeds = feeds_for(model.metadata, 1)
    feeds["presence"][:] = 0
    base = model.run(feeds)["edited"]
    for name in ("sketch", "semantic", "color", "exemplar"):  # absent: whatever the input holds is ignored
        changed = dict(feeds, **{name: np.ones_like(feeds[name])})
        assert np.array_equal(model.run(changed)["edited"], base), name
    feeds["presence"][:, 0] = 1
    feeds["sketch"] = np.ones_like(feeds["sketch"])
    assert not np.array_equal(model.run(feeds)["edited"], base)


def test_checkpoint_round_trip(edit_model):
    from stylert_export.edit_export import from_checkpoint, rebuild_reference

    loaded = from_checkpoint(edit_model["checkpoint"]).model
    ref = rebuild_reference(edit_model["path"])
    assert set(loaded.state_dict()) == set(ref.state_dict())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ref.state_dict().items())


@pytest.fixture(scope="module")
def guidance(astronaut, tmp_path_factory):
    root = tmp_path_factory.mktemp("guidance")
    mask = np.zeros(astronaut.shape[:2], np.uint8)
    mask[150:185, 180:260] = 255
    sketch = np.zeros_like(mask)
    sketch[160:168, 190:250] = 255
    labels = np.zeros_like(mask)
    labels[150:185, 180:260] = 12  # upper lip
    color = np.zeros_like(astronaut)
    color[150:185, 180:260] = (200, 40, 60)
    files = {"mask": mask, "sketch": sketch, "labels": labels, "color": color}
    for name, arr in files.items():
        Image.fromarray(arr).save(root / f"{name}.png")
    np.savez(root / "dirs.npz", smile=np.full(512, 0.2, np.float32))
    Image.fromarray(astronaut).save(root / "photo.png")
    return {**files, "root": root}


def test_editor_changes_only_the_mask_and_takes_every_guidance(edit_model, astronaut, guidance):
    ed = Editor(edit_model["path"], "cpu", directions=guidance["root"] / "dirs.npz")
    mask = guidance["mask"]
    plain = ed.edit(astronaut, mask, channels="rgb", seed=1)
    assert not (plain.image != astronaut).any(axis=2)[mask == 0].any()
    assert np.array_equal(plain.image, ed.edit(astronaut, mask, channels="rgb", seed=1).image)
    results = {"seed": ed.edit(astronaut, mask, channels="rgb", seed=2),
               "sketch": ed.edit(astronaut, mask, sketch=guidance["sketch"], channels="rgb", seed=1),
               "semantic": ed.edit(astronaut, mask, semantic=guidance["labels"], channels="rgb", seed=1),
               "color": ed.edit(astronaut, mask, color=guidance["color"], channels="rgb", seed=1),
               "exemplar": ed.edit(astronaut, mask, exemplar=np.ascontiguousarray(astronaut[:, ::-1]), channels="rgb",
                                   seed=1),
               "attribute": ed.edit(astronaut, mask, attribute="smile", strength=3.0, channels="rgb", seed=1)}
    for name, result in results.items():
        assert not np.array_equal(result.image, plain.image), name  # each guidance reaches the network
        assert not (result.image != astronaut).any(axis=2)[mask == 0].any(), name


@pytest.mark.parametrize("options, message", [
    ({"sketch": np.ones((10, 10), np.uint8)}, "sketch: 10x10, the photo 512x512"),
    ({"semantic": np.full((512, 512), 30, np.uint8)}, "labels [30] outside 0..18"),
    ({"semantic": np.zeros((512, 512, 3), np.uint8)}, "expected HxW integer labels"),
    ({"color": np.zeros((512, 512), np.uint8)}, "color: expected HxWx3 uint8"),
    ({"attribute": "frown"}, "unknown attribute 'frown'; directions: none"),
    ({"attribute": np.zeros(7)}, "must be 512 or 8x512"),
    ({"exemplar": np.full((64, 64, 3), 127, np.uint8)}, "exemplar: no face found"),
])
def test_bad_guidance_is_one_line(edit_model, astronaut, guidance, options, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Editor(edit_model["path"], "cpu").edit(astronaut, guidance["mask"], channels="rgb", **options)


def test_cli_edit_writes_the_photo_or_nothing(edit_model, guidance, tmp_path):
    root = guidance["root"]
    base = [sys.executable, "-m", "stylert.cli", "edit", str(root / "photo.png"), "--model", str(edit_model["path"])]
    result = subprocess.run(base + ["-o", str(tmp_path / "a.png"), "--mask", str(root / "mask.png"), "--sketch",
                                    str(root / "sketch.png"), "--semantic", str(root / "labels.png"), "--color",
                                    str(root / "color.png"), "--attribute", "smile=1.5", "--directions",
                                    str(root / "dirs.npz"), "--seed", "3", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["error"] is None and len(row["faces"]) == 1
    out, photo = read_image(tmp_path / "a.png").rgb, read_image(root / "photo.png").rgb
    assert not (out != photo).any(axis=2)[guidance["mask"] == 0].any()
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(empty)
    for args, message, code in ((["--mask", str(empty)], "the mask is empty", 1),
                                (["--mask", str(root / "mask.png"), "--attribute", "smile=1"], "needs --directions", 2),
                                (["--mask", str(root / "mask.png"), "--semantic", str(root / "photo.png")],
                                 "outside 0..18", 1)):
        result = subprocess.run(base + ["-o", str(tmp_path / "b.png"), *args], capture_output=True, text=True)
        assert result.returncode == code and message in result.stderr, result.stderr
        assert not (tmp_path / "b.png").exists()
    assert stylert.Editor is Editor


def test_directions_file_is_read_without_pickles(tmp_path):
    np.save(tmp_path / "smile.npy", np.full(512, 0.5))
    one = load_directions(tmp_path / "smile.npy")
    assert list(one) == ["smile"] and one["smile"].shape == (512,) and one["smile"].dtype == np.float32
    np.save(tmp_path / "obj.npy", np.array({"smile": np.zeros(512)}, dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="not a plain numpy file"):
        load_directions(tmp_path / "obj.npy")
    np.savez(tmp_path / "d.npz", smile=np.zeros(512), age=np.zeros((8, 512)))
    assert sorted(load_directions(tmp_path / "d.npz")) == ["age", "smile"]


def test_the_edit_guide_lists_exactly_the_choices_in_the_code():
    """The choices table of docs/pages/guides/edit.md is facemug.CHOICES, row for row (one list, two renderings)."""
    from pathlib import Path

    from stylert_export.facemug import CHOICES

    guide = (Path(__file__).parents[1] / "docs/pages/guides/edit.md").read_text()
    section = guide.split("## The choices the thesis leaves open")[1].split("\n## ")[0]
    rows = [tuple(cell.strip() for cell in line.strip("|").split(" | "))
            for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| what |", "| --- |"))]
    assert rows == [tuple(row) for row in CHOICES]
