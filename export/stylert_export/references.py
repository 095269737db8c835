"""The PyTorch reference of an exported graph, for `stylert bench --reference` (entry point
`stylert.references`) and benchmarks/latency.py: fp32, CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .onnx_export import read_metadata
from .ops import modconv_impl


def build(model_path: str | Path, checkpoint: str | Path | None = None, threads: int | None = None,
          form: str = "weight") -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """A function feeds -> outputs running the PyTorch model the graph was exported from; `form` (the
    StyleGAN2 generators' modulated convs) "weight" is the research code's arithmetic, "activation" the form
    the graphs are exported in."""
    if threads:
        torch.set_num_threads(threads)
    meta = read_metadata(model_path)
    call = meta.get("stylert.call")
    if call == "generator":
        from .generator import rebuild_reference as rebuild_generator

        with modconv_impl(form):
            g = rebuild_generator(model_path, checkpoint).eval()

        def run(feeds):
            t = {k: torch.from_numpy(v) for k, v in feeds.items()}
            ws = g.z_to_ws(t["z"], t["truncation_psi"]) if "z" in t else t["ws"]
            return [g(ws).numpy()]
    elif call == "retouch":
        from .retouch_export import rebuild_reference as rebuild_retoucher

        with modconv_impl(form):
            r = rebuild_retoucher(model_path, checkpoint).eval()

        def run(feeds):
            return [r(torch.from_numpy(feeds["image"]), torch.from_numpy(feeds["strength"]))[0].numpy()]
    elif call == "restore" and meta.get("stylert.method") == "vsp":
        from .restore_export import rebuild_reference as rebuild_restorer

        m = rebuild_restorer(model_path).eval()

        def run(feeds):
            t = {k: torch.from_numpy(v) for k, v in feeds.items()}
            return [m(t["image"], t["fidelity"], t["noise"]).numpy()]
    elif call == "restore":
        from .restore_export import rebuild_reference as rebuild_restorer

        with modconv_impl(form):
            m = rebuild_restorer(model_path).eval()

        def run(feeds):
            w, _ = m.encode(torch.from_numpy(feeds["image"]), with_quality=False)
            q = torch.from_numpy(feeds["q"]) if "q" in feeds else None
            return [m.synthesize(w, q).numpy()]
    elif call == "stylize":
        from .stylize_export import rebuild_reference as rebuild_stylize

        with modconv_impl(form):
            module = rebuild_stylize(model_path, checkpoint).eval()

        def run(feeds):
            return [module(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()]
    elif call == "edit":
        from .edit_export import rebuild_reference as rebuild_edit

        module = rebuild_edit(model_path, checkpoint).eval()

        def run(feeds):
            return [module(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()]
    elif call == "inpaint":
        from .inpaint_export import rebuild_reference as rebuild_inpaint

        module = rebuild_inpaint(model_path, checkpoint).eval()  # EXE-GAN and GRIG: the modules the graphs ran

        def run(feeds):
            return [module(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()]
    else:
        raise ValueError(f"{model_path}: no PyTorch reference for a '{call}' graph")

    def guarded(feeds):
        with torch.no_grad():
            return run(feeds)
    return guarded
