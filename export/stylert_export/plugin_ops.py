"""The plugin flavour of our graphs: custom ONNX nodes that TensorRT maps to stylert's plugins.

`--flavor plugin` exports each modulated conv as one `stylert::ModulatedConv2d` node and each
BAFS blend as one `stylert::BAFSBlend` node, carrying the `plugin_namespace` / `plugin_version`
attributes by which TensorRT's ONNX parser finds a plugin creator. The default, portable flavour
writes the same arithmetic as standard ONNX ops.

Node contracts (shapes with B = batch; float32 tensors, or in an fp16 export (`--fp16`) float16 for
every tensor but `styles`, which stays float32):
  ModulatedConv2d(x [B,I,H,W], styles [B,I], weight [O,I,k,k] (gain applied), bias [O],
                  noise [H*up, W*up] (already x strength; [1,1] zeros for none), resample_filter [f,f])
      attrs: up (1|2), padding, demodulate (0|1), activation ("lrelu"|"linear"), clamp (< 0: none)
      -> y [B, O, H*up, W*up] = ops.modconv.modulated_conv_bias_act(...)
  BAFSBlend(f_s [B,C,H,W], f_i [B,C,H,W], m_s [B,1,H,W], m_c [B,C,1,1])
      -> m_s m_c f_s + (1 - m_s)(1 - m_c) f_i                                  (StyleRetoucher Eq. 5)

ONNX Runtime has no such ops: `register_onnxruntime_ops` gives them CPU implementations (the
references above, through onnxruntime-extensions) so that both flavours can be checked against
each other; `runnable_on_onnxruntime` moves the nodes into the extensions' domain for that. The
extensions' Python ops take float32 only, so in an fp16 graph each node's float16 inputs are cast
to float32 before it and its output back to float16 after it.
"""
from __future__ import annotations

import torch

from .ops.modconv import modconv_impl, modulated_conv_bias_act

DOMAIN = "stylert"
PLUGIN_VERSION = "1"
FLAVORS = ("portable", "plugin", "winograd")  # winograd: the portable module, rewritten as it is exported
_PLUGIN_ATTRS = {"plugin_namespace": DOMAIN, "plugin_version": PLUGIN_VERSION}


def modulated_conv_node(x, styles, weight, bias, noise, resample_filter, *, up: int, padding: int, demodulate: bool,
                        lrelu: bool, clamp: float | None) -> torch.Tensor:
    noise = torch.zeros(1, 1, dtype=x.dtype) if noise is None else noise
    resample_filter = torch.zeros(1, 1, dtype=x.dtype) if resample_filter is None else resample_filter
    attrs = {**_PLUGIN_ATTRS, "up": int(up), "padding": int(padding), "demodulate": int(demodulate),
             "activation": "lrelu" if lrelu else "linear", "clamp": -1.0 if clamp is None else float(clamp)}
    shape = (x.shape[0], weight.shape[0], x.shape[2] * up, x.shape[3] * up)
    return torch.onnx.ops.symbolic(f"{DOMAIN}::ModulatedConv2d", (x, styles, weight, bias, noise, resample_filter),
                                   attrs, dtype=x.dtype, shape=shape, version=1)


def bafs_blend_node(f_s, f_i, m_s, m_c) -> torch.Tensor:
    return torch.onnx.ops.symbolic(f"{DOMAIN}::BAFSBlend", (f_s, f_i, m_s, m_c), dict(_PLUGIN_ATTRS),
                                   dtype=f_s.dtype, shape=f_s.shape, version=1)


def in_flavor(module: torch.nn.Module, build, flavor: str) -> torch.nn.Module:
    """`module` as exported in `flavor`: itself for the portable and winograd flavours (the latter is written as it
    is traced: onnx_export.export_checked); for the plugin flavour `build()` constructed under
    modconv_impl("plugin") (plugin nodes for its modulated convs and BAFS blends), holding `module`'s weights."""
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}; expected one of {FLAVORS}")
    if flavor != "plugin":
        return module
    with modconv_impl("plugin"):
        twin = build()
    twin.load_state_dict(module.state_dict())
    return twin.eval()


_REGISTERED = False


def register_onnxruntime_ops() -> None:
    """CPU implementations of the plugin nodes for ONNX Runtime (onnxruntime-extensions Python ops)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    f, i, s = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64, PyCustomOpDef.dt_string

    @onnx_op(op_type="ModulatedConv2d", inputs=[f] * 6, outputs=[f],
             attrs={"up": i, "padding": i, "demodulate": i, "activation": s, "clamp": f,
                    "plugin_namespace": s, "plugin_version": s})
    def _modconv(x, styles, weight, bias, noise, resample_filter, **attrs):
        t = [torch.from_numpy(a.copy()) for a in (x, styles, weight, bias, noise, resample_filter)]
        with torch.no_grad():
            y = modulated_conv_bias_act(*t, up=int(attrs["up"]), padding=int(attrs["padding"]),
                                        demodulate=bool(attrs["demodulate"]), lrelu=attrs["activation"] == "lrelu",
                                        clamp=None if attrs["clamp"] < 0 else float(attrs["clamp"]))
        return y.numpy()

    @onnx_op(op_type="BAFSBlend", inputs=[f] * 4, outputs=[f], attrs={"plugin_namespace": s, "plugin_version": s})
    def _blend(f_s, f_i, m_s, m_c, **attrs):
        return m_s * m_c * f_s + (1 - m_s) * (1 - m_c) * f_i

    _REGISTERED = True


def _widened(node, onnx) -> list:
    """Cast nodes around one plugin node of an fp16 graph: its float16 inputs (all but a modulated
    conv's styles) to float32, its float32 output back to float16."""
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    casts = []
    for i, name in enumerate(node.input):
        if node.op_type == "ModulatedConv2d" and i == 1:
            continue
        wide = f"{name}__f32_{node.name}_{i}"
        casts.append(onnx.helper.make_node("Cast", [name], [wide], to=f32, name=f"{wide}_cast"))
        node.input[i] = wide
    out = node.output[0]
    node.output[0] = f"{out}__f32"
    return casts + [node, onnx.helper.make_node("Cast", [node.output[0]], [out], to=f16, name=f"{out}_cast")]


def runnable_on_onnxruntime(path) -> "onnxruntime.InferenceSession":  # noqa: F821
    """An ONNX Runtime session for a plugin-flavour graph, with the CPU implementations above."""
    import onnx
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    register_onnxruntime_ops()
    model = onnx.load(str(path))
    fp16 = any(p.key == "stylert.precision" and p.value == "fp16" for p in model.metadata_props)
    nodes = []
    for node in model.graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        node.domain = "ai.onnx.contrib"
        if fp16:
            nodes += _widened(node, onnx)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for entry in model.opset_import:
        if entry.domain == DOMAIN:
            entry.domain = "ai.onnx.contrib"
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
