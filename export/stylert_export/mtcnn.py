"""MTCNN's three networks (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks") in PyTorch, with the weights of the ONNX files stylert's face detector runs, so that the
detector can be lowered to ExecuTorch like the call's networks.

Each module takes and returns exactly what its ONNX file does (channels-last input, the Keras port's output order),
so `stylert.faces.detect.MTCNNDetector` drives either. Weights are read from the ONNX initializers: no pickle.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .onnx_export import ExportError


def _conv_prelu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k), nn.PReLU(cout))


class _DensePReLU(nn.Sequential):
    """Fully connected layer and PReLU; the PReLU sees (N, C, 1, 1): XNNPACK takes PReLU on 4-D tensors only."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Linear(cin, cout), nn.PReLU(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](self[0](x)[:, :, None, None]).flatten(1)


def _pool(x: torch.Tensor, k: int, same: bool) -> torch.Tensor:
    """The Keras max pool with stride 2. "same" (ONNX SAME_UPPER) pads only at the end: one row and column there,
    below any finite activation (float32's lowest: ExecuTorch's serialiser cannot write -inf), give its
    ceil(size / 2) outputs for k = 2 at any size and for k = 3 at the even sizes R-Net and O-Net see, without a
    branch on the size's parity (P-Net's is dynamic). "valid" is PyTorch's floor mode."""
    if same:
        x = F.pad(x, (0, 1, 0, 1), value=torch.finfo(torch.float32).min)
    return F.max_pool2d(x, k, 2)


class PNet(nn.Module):
    """Proposal network: fully convolutional over one pyramid level; a 12x12 window per output pixel (stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _conv_prelu(3, 10, 3), _conv_prelu(10, 16, 3), _conv_prelu(16, 32, 3)
        self.box, self.face = nn.Conv2d(32, 4, 1), nn.Conv2d(32, 2, 1)

    def forward(self, image: torch.Tensor):
        x = _pool(self.conv1(image.permute(0, 3, 1, 2)), 2, same=True)
        x = self.conv3(self.conv2(x))
        # The softmax over channels runs on ExecuTorch's portable kernel (a small map). Written over the last dim of
        # the permuted map, XNNPACK took it and gave wrong numbers (ExecuTorch 1.4.1); as sigmoids of the logits'
        # difference, its channel slices cannot be exported with dynamic sizes.
        return self.box(x).permute(0, 2, 3, 1), F.softmax(self.face(x), dim=1).permute(0, 2, 3, 1)


class RNet(nn.Module):
    """Refinement network: one 24x24 crop per candidate box."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _conv_prelu(3, 28, 3), _conv_prelu(28, 48, 3), _conv_prelu(48, 64, 2)
        self.dense = _DensePReLU(576, 128)
        self.box, self.face = nn.Linear(128, 4), nn.Linear(128, 2)

    def forward(self, crops: torch.Tensor):
        x = _pool(self.conv1(crops.permute(0, 3, 1, 2)), 3, same=True)
        x = self.conv3(_pool(self.conv2(x), 3, same=False))
        x = self.dense(x.permute(0, 2, 3, 1).flatten(1))  # Keras flattens channels-last
        return self.box(x), F.softmax(self.face(x), dim=1)


class ONet(nn.Module):
    """Output network: one 48x48 crop per box; boxes, five landmarks and the face score."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = _conv_prelu(3, 32, 3), _conv_prelu(32, 64, 3)
        self.conv3, self.conv4 = _conv_prelu(64, 64, 3), _conv_prelu(64, 128, 2)
        self.dense = _DensePReLU(1152, 256)
        self.box, self.landmarks, self.face = nn.Linear(256, 4), nn.Linear(256, 10), nn.Linear(256, 2)

    def forward(self, crops: torch.Tensor):
        x = _pool(self.conv1(crops.permute(0, 3, 1, 2)), 3, same=True)
        x = _pool(self.conv2(x), 3, same=False)
        x = self.conv4(_pool(self.conv3(x), 2, same=True))
        x = self.dense(x.permute(0, 2, 3, 1).flatten(1))
        return self.box(x), self.landmarks(x), F.softmax(self.face(x), dim=1)


# Each parameter's initializer in the ONNX file (Keras layer names); dense kernels are stored (in, out).
LAYOUT = {
    "pnet.onnx": (PNet, {"conv1": ("conv2d", "p_re_lu"), "conv2": ("conv2d_1", "p_re_lu_1"),
                         "conv3": ("conv2d_2", "p_re_lu_2"), "box": "conv2d_4", "face": "conv2d_3"}),
    "rnet.onnx": (RNet, {"conv1": ("conv2d_5", "p_re_lu_3"), "conv2": ("conv2d_6", "p_re_lu_4"),
                         "conv3": ("conv2d_7", "p_re_lu_5"), "dense": ("dense", "p_re_lu_6"),
                         "box": "dense_2", "face": "dense_1"}),
    "onet.onnx": (ONet, {"conv1": ("conv2d_8", "p_re_lu_7"), "conv2": ("conv2d_9", "p_re_lu_8"),
                         "conv3": ("conv2d_10", "p_re_lu_9"), "conv4": ("conv2d_11", "p_re_lu_10"),
                         "dense": ("dense_3", "p_re_lu_11"), "box": "dense_5", "landmarks": "dense_6",
                         "face": "dense_4"}),
}


def load(path: str | Path) -> nn.Module:
    """The network of an MTCNN ONNX file (pnet.onnx, rnet.onnx, onet.onnx) with its weights, in eval mode."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if path.name not in LAYOUT:
        raise ExportError(f"{path}: not an MTCNN network file (expected one of {', '.join(LAYOUT)})")
    cls, names = LAYOUT[path.name]
    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    net = cls().eval()
    state = {}
    try:
        slopes = _prelu_slopes(graph, init)
        for attr, name in names.items():
            layer, prelu = name if isinstance(name, tuple) else (name, None)
            kernel = init[f"{layer}/kernel:0"]
            prefix = f"{attr}.0." if prelu else f"{attr}."
            state[prefix + "weight"] = kernel.T if kernel.ndim == 2 else kernel
            state[prefix + "bias"] = init[f"{layer}/bias:0"]
            if prelu:
                state[f"{attr}.1.weight"] = slopes[prelu].reshape(-1)
        net.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()})
    except KeyError as exc:
        raise ExportError(f"{path}: no weight {exc} in the file: not the MTCNN layout stylert ships") from exc
    except RuntimeError as exc:
        raise ExportError(f"{path}: weights do not fit MTCNN's {cls.__name__}: {str(exc).splitlines()[0]}") from exc
    return net


def _prelu_slopes(graph, init: dict) -> dict[str, np.ndarray]:
    """Keras PReLU layer name -> its slope: the PRelu node's output is "<layer>/add:0", its slope an initializer."""
    return {node.output[0].split("/")[0]: init[node.input[1]] for node in graph.node if node.op_type == "PRelu"}
