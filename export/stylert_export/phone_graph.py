"""Rewrites of a fixed-shape ONNX graph into ops both phone accelerators ONNX Runtime drives take (NNAPI and Core ML
MLProgram), each exact: the ort-mobile target applies them before its usability check, and the artifact's parity
check against PyTorch covers them.

  Gather(x, constant scalar i, axis a)  -> Squeeze(Slice(x, i, i + 1, a), a)   (Core ML: no Gather)
  Reciprocal(x)                          -> Div(1, x)                           (NNAPI: no Reciprocal)
  Min(x, constant c)                     -> Clip(x, max=c)                      (Core ML: no Min)
  Pad(x, constant pads, constant 0)      -> Slice (negative pads), Concat with zeros (positive)   (Core ML: no Pad)
  ConvTranspose(x, constant W, stride 2) -> Conv with one output per phase, DepthToSpace (DCR)  (NNAPI: none)
  Expand(x, constant shape)              -> Add(x, zeros of that shape)            (both: no Expand)
  BatchNormalization (inference)         -> Mul, Add per channel                   (Core ML MLProgram: none)
  a node whose inputs are all constants   -> its outputs as constants
  LayerNormalization                     -> ReduceMean, Sub, Mul, Sqrt, Div        (NNAPI: none)
  ReduceSum(x, constant axes)            -> ReduceMean x the count                 (NNAPI: none)
  Resize(x, omitted roi / scales)        -> the same with empty constants          (the checker's reading)
  Reshape to rank 6, Pad, Reshape         -> Resize (nearest) x a constant mask: zero insertion in rank 4
  (upfirdn2d's upsampling; Core ML takes rank <= 5, ncnn rank <= 4)
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference


class _Graph:
    """The graph's nodes rebuilt in order, with its constants and static shapes at hand."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        inferred = shape_inference.infer_shapes(model)
        self.shapes: dict[str, list[int]] = {}
        self.dtypes: dict[str, int] = {}
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = [d.dim_value for d in dims]
            self.dtypes[vi.name] = vi.type.tensor_type.elem_type
        self.count = 0

    def constant(self, value: np.ndarray, hint: str) -> str:
        self.count += 1
        name = f"phone_{hint}_{self.count}"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.constants[name] = np.asarray(value)
        return name

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"phone_{hint}_{self.count}"


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _gather(g: _Graph, node) -> list | None:
    data, index = node.input
    i = g.constants.get(index)
    if i is None or i.ndim != 0:
        return None
    axis = _attr(node, "axis", 0)
    start = int(i)
    if start < 0:
        if data not in g.shapes:
            return None
        start += g.shapes[data][axis]
    sliced = g.fresh("slice")
    return [helper.make_node("Slice", [data, g.constant(np.array([start], np.int64), "start"),
                                       g.constant(np.array([start + 1], np.int64), "end"),
                                       g.constant(np.array([axis], np.int64), "axis")], [sliced]),
            helper.make_node("Squeeze", [sliced, g.constant(np.array([axis], np.int64), "axis")], list(node.output))]


def _reciprocal(g: _Graph, node) -> list | None:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(g.dtypes.get(node.input[0], onnx.TensorProto.FLOAT))
    return [helper.make_node("Div", [g.constant(np.array(1, dtype), "one"), node.input[0]], list(node.output))]


def _min(g: _Graph, node) -> list | None:
    if len(node.input) != 2:
        return None
    x, c = node.input
    if x in g.constants:
        x, c = c, x
    value = g.constants.get(c)
    if value is None or value.size != 1 or g.shapes.get(x) is None or g.shapes.get(node.output[0]) != g.shapes[x]:
        return None
    lowest = np.array(np.finfo(value.dtype).min, value.dtype)  # explicit: the usability checker counts an
    return [helper.make_node("Clip", [x, g.constant(lowest, "min"), g.constant(value.reshape(()), "max")],
                             list(node.output))]  # empty input name as a tensor of unknown shape


def _pad(g: _Graph, node) -> list | None:
    if _attr(node, "mode", b"constant") not in (b"constant", "constant"):
        return None
    x, pads = node.input[0], g.constants.get(node.input[1]) if len(node.input) > 1 else None
    value = g.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    axes = g.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    shape = g.shapes.get(x)
    if pads is None or value is None or shape is None or np.any(value != 0) or axes is not None:
        return None
    rank = len(shape)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(g.dtypes.get(x, onnx.TensorProto.FLOAT))
    nodes, current, shape = [], x, list(shape)
    for axis in range(rank):
        before, after = int(pads[axis]), int(pads[axis + rank])
        if before < 0 or after < 0:
            start, end = max(-before, 0), shape[axis] - max(-after, 0)
            out = g.fresh("crop")
            nodes.append(helper.make_node("Slice", [current, g.constant(np.array([start], np.int64), "start"),
                                                    g.constant(np.array([end], np.int64), "end"),
                                                    g.constant(np.array([axis], np.int64), "axis")], [out]))
            current, shape[axis] = out, end - start
            before, after = max(before, 0), max(after, 0)
        if before > 0 or after > 0:
            parts = []
            for size in (before, None, after):
                if size is None:
                    parts.append(current)
                elif size > 0:
                    parts.append(g.constant(np.zeros([*shape[:axis], size, *shape[axis + 1:]], dtype), "zeros"))
            out = g.fresh("pad")
            nodes.append(helper.make_node("Concat", parts, [out], axis=axis))
            current, shape[axis] = out, shape[axis] + before + after
    if not nodes:
        return [helper.make_node("Identity", [x], list(node.output))]
    nodes[-1].output[0] = node.output[0]
    return nodes


def _conv_transpose(g: _Graph, node) -> list | None:
    """A stride-2 ConvTranspose as one stride-1 Conv with 4x the outputs, one per output phase (a, b), and a
    DepthToSpace (DCR): output pixel (2m + a, 2n + b) is phase (a, b)'s pixel (m, n). In one dimension, with pads
    p (before), phase a takes the taps t = r + 2u (r = (a + p) mod 2) and input pixels m + c - u
    (c = (a + p - r) / 2): a correlation over a common window of T taps after P pixels of padding."""
    x, w = node.input[0], g.constants.get(node.input[1])
    bias = g.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    shape = g.shapes.get(x)
    if (w is None or shape is None or len(shape) != 4 or _attr(node, "group", 1) != 1
            or list(_attr(node, "strides", [1, 1])) != [2, 2] or set(_attr(node, "dilations", [1, 1])) != {1}
            or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or _attr(node, "output_shape")
            or (len(node.input) > 2 and node.input[2] and bias is None)):
        return None
    cin, cout, kh, kw = w.shape
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))
    extra = list(_attr(node, "output_padding", [0, 0]))
    dims = []
    for d, (k, size) in enumerate(zip((kh, kw), shape[2:])):
        before, after = pads[d], pads[d + 2]
        length = 2 * (size - 1) + k - before - after + extra[d]
        phases = []
        for a in (0, 1):
            r = (a + before) % 2
            phases.append((r, (a + before - r) // 2, (k - r + 1) // 2))  # (first tap, input offset, taps)
        pad = max(u - 1 - c for _, c, u in phases)
        taps = max(pad + c for _, c, _ in phases) + 1
        rows = (length + 1) // 2
        pad_after = rows + taps - 1 - size - pad
        if pad < 0 or pad_after < 0:
            return None
        index = np.full((2, taps), -1)  # [phase, window tap] -> kernel tap, -1 where none
        for a, (r, c, u_count) in enumerate(phases):
            for v in range(taps):
                u = pad + c - v
                if 0 <= u < u_count:
                    index[a, v] = r + 2 * u
        dims.append((length, pad, pad_after, taps, index))
    (ly, py0, py1, ty, iy), (lx, px0, px1, tx, ix) = dims
    kernel = np.zeros((2, 2, cout, cin, ty, tx), w.dtype)
    for a in (0, 1):
        for b in (0, 1):
            for vy in range(ty):
                for vx in range(tx):
                    if iy[a, vy] >= 0 and ix[b, vx] >= 0:
                        kernel[a, b, :, :, vy, vx] = w[:, :, iy[a, vy], ix[b, vx]].T
    inputs = [x, g.constant(kernel.reshape(4 * cout, cin, ty, tx), "phase_weight")]
    if bias is not None:
        inputs.append(g.constant(np.tile(bias, 4), "phase_bias"))
    phased, spread = g.fresh("phases"), g.fresh("spread")
    nodes = [helper.make_node("Conv", inputs, [phased], kernel_shape=[ty, tx], pads=[py0, px0, py1, px1]),
             helper.make_node("DepthToSpace", [phased], [spread], blocksize=2, mode="DCR")]
    rows, cols = 2 * ((ly + 1) // 2), 2 * ((lx + 1) // 2)
    if (rows, cols) == (ly, lx):
        nodes[-1].output[0] = node.output[0]
        return nodes
    nodes.append(helper.make_node("Slice", [spread, g.constant(np.array([0, 0], np.int64), "start"),
                                           g.constant(np.array([ly, lx], np.int64), "end"),
                                           g.constant(np.array([2, 3], np.int64), "axis")], list(node.output)))
    return nodes


def _zero_insertion(g: _Graph, node, consumers: dict) -> tuple[list, list] | None:
    """upfirdn2d's zero-insertion upsample, Reshape [N, C, H, 1, W, 1] -> Pad (up - 1 after axes 3 and 5) ->
    Reshape [N, C, up H, up W], in rank 4: a nearest-neighbour Resize times a constant mask that keeps pixel
    (up i, up j). Returns (the nodes, the nodes they replace) or None."""
    shape = g.shapes.get(node.output[0])
    if shape is None or len(shape) != 6 or shape[3] != 1 or shape[5] != 1:
        return None
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Pad" or _attr(users[0], "mode", b"constant") not in (b"constant", "constant"):
        return None
    pad = users[0]
    pads = g.constants.get(pad.input[1]) if len(pad.input) > 1 else None
    if pads is None or (len(pad.input) > 2 and pad.input[2] and np.any(g.constants.get(pad.input[2], 1) != 0)):
        return None
    up = int(pads[9]) + 1
    if up < 2 or list(pads) != [0] * 9 + [up - 1, 0, up - 1]:
        return None
    after = consumers.get(pad.output[0], [])
    n, c, h, _, w, _ = shape
    if len(after) != 1 or after[0].op_type != "Reshape" or g.shapes.get(after[0].output[0]) != [n, c, h * up, w * up]:
        return None
    source = node.input[0]
    if g.shapes.get(source) != [n, c, h, w]:
        return None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(g.dtypes.get(source, onnx.TensorProto.FLOAT))
    mask = np.zeros((1, 1, h * up, w * up), dtype)
    mask[:, :, ::up, ::up] = 1
    repeated = g.fresh("nearest")
    nodes = [helper.make_node("Resize", [source, g.constant(np.zeros(0, np.float32), "roi"), g.constant(np.array([1, 1, up, up], np.float32), "scales")],
                              [repeated], mode="nearest", coordinate_transformation_mode="asymmetric",
                              nearest_mode="floor"),
             helper.make_node("Mul", [repeated, g.constant(mask, "zero_insertion")], list(after[0].output))]
    return nodes, [pad, after[0]]


def _expand(g: _Graph, node) -> list | None:
    """Expand to a fixed shape as an addition of zeros of that shape (broadcasting does the expansion)."""
    x, out = node.input[0], g.shapes.get(node.output[0])
    if out is None or g.shapes.get(x) is None or np.prod(out) > 2 ** 22:
        return None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(g.dtypes.get(x, onnx.TensorProto.FLOAT))
    if not np.issubdtype(dtype, np.floating):
        return None
    return [helper.make_node("Add", [x, g.constant(np.zeros(out, dtype), "zeros")], list(node.output))]


def _batch_norm(g: _Graph, node) -> list | None:
    """Inference BatchNormalization as x * scale + shift per channel (Core ML MLProgram: none)."""
    scale, bias, mean, var = (g.constants.get(i) for i in node.input[1:5])
    shape = g.shapes.get(node.input[0])
    if any(v is None for v in (scale, bias, mean, var)) or shape is None or len(node.output) != 1:
        return None
    factor = scale / np.sqrt(var + _attr(node, "epsilon", 1e-5))
    per_channel = [1, -1] + [1] * (len(shape) - 2)
    scaled = g.fresh("bn")
    return [helper.make_node("Mul", [node.input[0], g.constant(factor.reshape(per_channel).astype(scale.dtype), "scale")],
                             [scaled]),
            helper.make_node("Add", [scaled, g.constant((bias - mean * factor).reshape(per_channel).astype(scale.dtype),
                                                         "shift")], list(node.output))]


def _resize(g: _Graph, node) -> list | None:
    """Resize with its omitted roi (and scales, where sizes are given) as empty constants: the usability checker
    counts an omitted input as a tensor of unknown shape and leaves the node out."""
    inputs = list(node.input)
    if len(inputs) < 3 or all(inputs[1:3]):
        return None
    for i in (1, 2):
        if not inputs[i]:
            inputs[i] = g.constant(np.zeros(0, np.float32), "empty")
    return [helper.make_node("Resize", inputs, list(node.output), name=node.name,
                             **{a.name: helper.get_attribute_value(a) for a in node.attribute})]


def _fold(g: _Graph, node) -> bool:
    """A node of the default domain whose inputs are all constants becomes its constant outputs (the exporter's
    folding leaves some, such as the transposed weight of a ConvTranspose, which a phone EP needs constant)."""
    from onnx.reference import ReferenceEvaluator

    if node.domain not in ("", "ai.onnx") or not node.input or not all(i in g.constants for i in node.input if i):
        return False
    if node.op_type in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"):
        return False
    inputs = [i for i in node.input if i]
    model = helper.make_model(
        helper.make_graph([node], "fold", [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(
            g.constants[i].dtype), g.constants[i].shape) for i in inputs],
            [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]),
        opset_imports=list(g.model.opset_import))
    outputs = ReferenceEvaluator(model).run(None, {i: g.constants[i] for i in inputs})
    for name, value in zip(node.output, outputs):
        value = np.asarray(value)
        g.graph.initializer.append(numpy_helper.from_array(value, name))
        g.constants[name] = value
    return True


def _layer_norm(g: _Graph, node) -> list | None:
    """LayerNormalization from ReduceMean, Sub, Mul, Sqrt, Div (NNAPI: none)."""
    shape = g.shapes.get(node.input[0])
    if shape is None or len([o for o in node.output if o]) != 1:
        return None
    axis = _attr(node, "axis", -1) % len(shape)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(g.dtypes.get(node.input[0], onnx.TensorProto.FLOAT))
    axes = g.constant(np.arange(axis, len(shape), dtype=np.int64), "axes")
    mean, centred, square, var, shifted, std, normed = (g.fresh(h) for h in ("mean", "centred", "square", "var",
                                                                                  "shifted", "std", "normed"))
    nodes = [helper.make_node("ReduceMean", [node.input[0], axes], [mean], keepdims=1),
             helper.make_node("Sub", [node.input[0], mean], [centred]),
             helper.make_node("Mul", [centred, centred], [square]),
             helper.make_node("ReduceMean", [square, axes], [var], keepdims=1),
             helper.make_node("Add", [var, g.constant(np.array(_attr(node, "epsilon", 1e-5), dtype), "eps")],
                              [shifted]),
             helper.make_node("Sqrt", [shifted], [std]),
             helper.make_node("Div", [centred, std], [normed])]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    scaled = g.fresh("scaled") if bias else node.output[0]
    nodes.append(helper.make_node("Mul", [normed, node.input[1]], [scaled]))
    if bias:
        nodes.append(helper.make_node("Add", [scaled, bias], [node.output[0]]))
    return nodes


def _reduce_sum(g: _Graph, node) -> list | None:
    """ReduceSum over constant axes as ReduceMean times the count (NNAPI: no ReduceSum)."""
    shape = g.shapes.get(node.input[0])
    axes = g.constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if shape is None or axes is None or axes.size == 0:
        return None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(g.dtypes.get(node.input[0], onnx.TensorProto.FLOAT))
    if not np.issubdtype(dtype, np.floating):
        return None
    count = int(np.prod([shape[int(a)] for a in axes.reshape(-1)]))
    mean = g.fresh("mean")
    return [helper.make_node("ReduceMean", [node.input[0], node.input[1]], [mean], keepdims=_attr(node, "keepdims", 1)),
            helper.make_node("Mul", [mean, g.constant(np.array(count, dtype), "count")], list(node.output))]


REWRITES = {"LayerNormalization": _layer_norm, "ReduceSum": _reduce_sum, "Resize": _resize, "Gather": _gather, "Expand": _expand, "BatchNormalization": _batch_norm, "Reciprocal": _reciprocal, "Min": _min, "Pad": _pad, "ConvTranspose": _conv_transpose}


def rewrite_for_phones(model: onnx.ModelProto) -> dict[str, int]:
    """Apply REWRITES in place where they are exact for this graph; {op: nodes rewritten}."""
    g = _Graph(model)
    done: dict[str, int] = {}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes, skip = [], set()
    for node in model.graph.node:
        if id(node) in skip:
            continue
        if node.op_type == "Reshape" and (found := _zero_insertion(g, node, consumers)):
            nodes.extend(found[0])
            skip.update(id(n) for n in found[1])
            done["zero insertion (Reshape, Pad, Reshape)"] = done.get("zero insertion (Reshape, Pad, Reshape)", 0) + 1
            continue
        if _fold(g, node):
            done["constant folded"] = done.get("constant folded", 0) + 1
            continue
        rewrite = REWRITES.get(node.op_type)
        replaced = rewrite(g, node) if rewrite and node.domain in ("", "ai.onnx") else None
        if replaced is None:
            nodes.append(node)
        else:
            nodes.extend(replaced)
            done[node.op_type] = done.get(node.op_type, 0) + 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return done
