"""Rewrites of a fixed-shape ONNX graph into ops both phone accelerators ONNX Runtime drives take (NNAPI and Core ML
MLProgram), each exact but Erf's (within 1e-6): the ort-mobile target applies them before its usability check,
and the artifact's parity check against PyTorch covers them.

  Gather(x, constant scalar i, axis a)  -> Squeeze(Slice(x, i, i + 1, a), a)   (Core ML: no Gather)
  Reciprocal(x)                          -> Div(1, x)                           (NNAPI: no Reciprocal)
  Min(x, constant c), Clip(x, lo, hi)    -> Max(x, lo), -Max(-x, -hi)           (Core ML: no Min; NNAPI: Clip
                                                                                 only as [0, 6] or [-1, 1])
  Pad(x, constant pads, 0 or reflect)    -> Slice (negative pads), Concat with zeros or mirrored rows (Core ML: no
                                            Pad; NNAPI: constant mode only)
  ConvTranspose(x, constant W, stride 2) -> Conv with one output per phase, DepthToSpace (DCR)  (NNAPI: none)
  DepthToSpace CRD after a Conv          -> DCR, the Conv's output channels reordered          (NNAPI: DCR only)
  Expand(x, constant shape)              -> Add(x, zeros of that shape)            (both: no Expand)
  BatchNormalization (inference)         -> Mul, Add per channel                   (Core ML MLProgram: none)
  a node whose inputs are all constants   -> its outputs as constants
  LayerNormalization                     -> ReduceMean, Sub, Mul, Sqrt, Div        (NNAPI: none)
  ReduceSum(x, constant axes)            -> ReduceMean x the count                 (NNAPI: none)
  ReduceL2(x, constant axes)             -> Sqrt(ReduceMean(x x) x the count)      (both: none)
  Erf(x)                                 -> Abramowitz & Stegun 7.1.26 in Mul, Div, Sqrt, Exp, Clip (NNAPI: none)
  Resize(x, omitted roi / scales)        -> the same with empty constants          (the checker's reading)
  Reshape to rank 6, Pad, Reshape         -> Resize (nearest) x a constant mask: zero insertion in rank 4
  (upfirdn2d's upsampling; Core ML takes rank <= 5, ncnn rank <= 4)
  Reshape to rank 6, Transpose, Reshape   -> a depthwise one-hot Conv of stride r: PixelUnshuffle in rank 4
  Slice(x, 0 to the end, steps s on H, W) -> MaxPool of kernel 1, stride s: subsampling (ncnn: no strided Slice)

For ncnn only (rewrite_for_ncnn, after the above; pnnx 20261020 and ncnn take the first three wrongly, ncnn has no
layer for the fourth):
  ReduceMean of a rank-3 tensor over axis 1 or 2 -> MatMul with a constant averaging vector (pnnx writes ncnn's
                                            Reduction with no axes for a tensor without a batch axis: it reduced
                                            nothing)
  Squeeze to rank 1                       -> Reshape to that shape (pnnx fuses such Squeezes of Slices into one
                                            unbind whose single values ncnn cannot reshape)
  MaxPool from a 1x1 map to a 1x1 map     -> Identity (ncnn's Pooling with ceil mode on a 1x1 map wrote garbage, 1e33:
                                            U^2-Net's deepest pooling at small sizes)
  Cast(LessOrEqual(x, constant c), float) -> 1 - Ceil(Clip(x - c, 0, 1))  (ncnn: no comparison layer; exact: x - c
                                            is 0 only where x = c, and Ceil takes every value of (0, 1] to 1)
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

    def np_dtype(self, name: str) -> np.dtype:
        """The NumPy dtype of a tensor of the graph (float32 where shape inference left it unknown)."""
        return onnx.helper.tensor_dtype_to_np_dtype(self.dtypes.get(name, onnx.TensorProto.FLOAT))

    def constant(self, value: np.ndarray, hint: str) -> str:
        self.count += 1
        name = f"phone_{hint}_{self.count}"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.constants[name] = np.asarray(value)
        return name

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"phone_{hint}_{self.count}"


def attribute(node, name: str, default=None):
    """A node's attribute by name (strings decoded), or `default`."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _slice(g: _Graph, x: str, axis: int, start: int, end: int) -> tuple[str, object]:
    """(the output's name, a Slice node taking x[start:end] along `axis`)."""
    out = g.fresh("slice")
    return out, helper.make_node("Slice", [x, g.constant(np.array([start], np.int64), "start"),
                                           g.constant(np.array([end], np.int64), "end"),
                                           g.constant(np.array([axis], np.int64), "axis")], [out])


def _gather(g: _Graph, node) -> list | None:
    data, index = node.input
    i = g.constants.get(index)
    if i is None or i.ndim != 0:
        return None
    axis = attribute(node, "axis", 0)
    start = int(i)
    if start < 0:
        if data not in g.shapes:
            return None
        start += g.shapes[data][axis]
    sliced, node_slice = _slice(g, data, axis, start, start + 1)
    return [node_slice, helper.make_node("Squeeze", [sliced, g.constant(np.array([axis], np.int64), "axis")],
                                         list(node.output))]


def _reciprocal(g: _Graph, node) -> list | None:
    dtype = g.np_dtype(node.input[0])
    return [helper.make_node("Div", [g.constant(np.array(1, dtype), "one"), node.input[0]], list(node.output))]


def _bounded(g: _Graph, x: str, low, high, output: str, dtype) -> list:
    """x clipped to [low, high] (either may be None) as Max(x, low) and -Max(-y, -high): exact, as a sign flip is,
    in ops both accelerators take (NNAPI takes Clip only as [0, 6] or [-1, 1]; Core ML MLProgram has no Min)."""
    nodes, current = [], x
    if low is not None:
        out = g.fresh("max") if high is not None else output
        nodes.append(helper.make_node("Max", [current, g.constant(np.array(low, dtype), "low")], [out]))
        current = out
    if high is not None:
        minus_one = g.constant(np.array(-1, dtype), "minus_one")
        flipped, capped = g.fresh("flipped"), g.fresh("capped")
        nodes += [helper.make_node("Mul", [current, minus_one], [flipped]),
                  helper.make_node("Max", [flipped, g.constant(np.array(-high, dtype), "high")], [capped]),
                  helper.make_node("Mul", [capped, minus_one], [output])]
    return nodes


def _min(g: _Graph, node) -> list | None:
    if len(node.input) != 2:
        return None
    x, c = node.input
    if x in g.constants:
        x, c = c, x
    value = g.constants.get(c)
    if value is None or value.size != 1 or g.shapes.get(x) is None or g.shapes.get(node.output[0]) != g.shapes[x]:
        return None
    return _bounded(g, x, None, value.reshape(()), node.output[0], value.dtype)


def _clip(g: _Graph, node) -> list | None:
    """Clip to bounds other than NNAPI's relu6 and relu1."""
    bounds = [node.input[i] if len(node.input) > i and node.input[i] else None for i in (1, 2)]
    if any(b is not None and b not in g.constants for b in bounds):
        return None
    low, high = (None if b is None else float(g.constants[b].reshape(())) for b in bounds)
    if (low, high) in ((0.0, 6.0), (-1.0, 1.0)) or (low is None and high is None):
        return None
    dtype = g.np_dtype(node.input[0])
    return _bounded(g, node.input[0], low, high, node.output[0], dtype)


def _pad(g: _Graph, node) -> list | None:
    """Constant (zero) padding as Slice (negative pads) and Concat with zeros; reflect padding as Concat of the
    mirrored rows and columns, one Slice each."""
    mode = attribute(node, "mode", "constant")
    if mode not in ("constant", "reflect"):
        return None
    x, pads = node.input[0], g.constants.get(node.input[1]) if len(node.input) > 1 else None
    value = g.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    axes = g.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    shape = g.shapes.get(x)
    if pads is None or value is None or shape is None or np.any(value != 0) or axes is not None:
        return None
    rank = len(shape)
    if mode == "reflect" and any(p < 0 or p >= shape[i % rank] for i, p in enumerate(pads)):
        return None
    dtype = g.np_dtype(x)
    nodes, current, shape = [], x, list(shape)
    for axis in range(rank):
        before, after = int(pads[axis]), int(pads[axis + rank])
        if before < 0 or after < 0:
            start, end = max(-before, 0), shape[axis] - max(-after, 0)
            current, sliced = _slice(g, current, axis, start, end)
            nodes.append(sliced)
            shape[axis] = end - start
            before, after = max(before, 0), max(after, 0)
        if before > 0 or after > 0:
            if mode == "reflect":  # rows before .. 1 ahead, size-2 .. size-1-after behind (the edge not repeated)
                rows = [*range(before, 0, -1), None, *range(shape[axis] - 2, shape[axis] - 2 - after, -1)]
                parts = []
                for row in rows:
                    if row is None:
                        parts.append(current)
                    else:
                        name, sliced = _slice(g, current, axis, row, row + 1)
                        nodes.append(sliced)
                        parts.append(name)
            else:
                parts = [current if size is None else
                         g.constant(np.zeros([*shape[:axis], size, *shape[axis + 1:]], dtype), "zeros")
                         for size in (before, None, after) if size is None or size > 0]
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
    if (w is None or shape is None or len(shape) != 4 or attribute(node, "group", 1) != 1
            or list(attribute(node, "strides", [1, 1])) != [2, 2] or set(attribute(node, "dilations", [1, 1])) != {1}
            or attribute(node, "auto_pad", "NOTSET") != "NOTSET" or attribute(node, "output_shape")
            or (len(node.input) > 2 and node.input[2] and bias is None)):
        return None
    cin, cout, kh, kw = w.shape
    pads = list(attribute(node, "pads", [0, 0, 0, 0]))
    extra = list(attribute(node, "output_padding", [0, 0]))
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
    if len(users) != 1 or users[0].op_type != "Pad" or attribute(users[0], "mode", "constant") != "constant":
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
    dtype = g.np_dtype(source)
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
    dtype = g.np_dtype(x)
    if not np.issubdtype(dtype, np.floating):
        return None
    return [helper.make_node("Add", [x, g.constant(np.zeros(out, dtype), "zeros")], list(node.output))]


def _batch_norm(g: _Graph, node) -> list | None:
    """Inference BatchNormalization as x * scale + shift per channel (Core ML MLProgram: none)."""
    scale, bias, mean, var = (g.constants.get(i) for i in node.input[1:5])
    shape = g.shapes.get(node.input[0])
    if any(v is None for v in (scale, bias, mean, var)) or shape is None or len(node.output) != 1:
        return None
    factor = scale / np.sqrt(var + attribute(node, "epsilon", 1e-5))
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
    axis = attribute(node, "axis", -1) % len(shape)
    dtype = g.np_dtype(node.input[0])
    axes = g.constant(np.arange(axis, len(shape), dtype=np.int64), "axes")
    mean, centred, square, var, shifted, std, normed = (g.fresh(h) for h in ("mean", "centred", "square", "var",
                                                                                  "shifted", "std", "normed"))
    nodes = [helper.make_node("ReduceMean", [node.input[0], axes], [mean], keepdims=1),
             helper.make_node("Sub", [node.input[0], mean], [centred]),
             helper.make_node("Mul", [centred, centred], [square]),
             helper.make_node("ReduceMean", [square, axes], [var], keepdims=1),
             helper.make_node("Add", [var, g.constant(np.array(attribute(node, "epsilon", 1e-5), dtype), "eps")],
                              [shifted]),
             helper.make_node("Sqrt", [shifted], [std]),
             helper.make_node("Div", [centred, std], [normed])]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    scaled = g.fresh("scaled") if bias else node.output[0]
    nodes.append(helper.make_node("Mul", [normed, node.input[1]], [scaled]))
    if bias:
        nodes.append(helper.make_node("Add", [scaled, bias], [node.output[0]]))
    return nodes


def _sum_as_mean(g: _Graph, node, x: str, output: str) -> list | None:
    """The sum of x over `node`'s constant axes (and with its keepdims) as ReduceMean times the count."""
    shape = g.shapes.get(node.input[0])
    axes = g.constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    dtype = g.np_dtype(node.input[0])
    if shape is None or axes is None or axes.size == 0 or not np.issubdtype(dtype, np.floating):
        return None
    count = int(np.prod([shape[int(a)] for a in axes.reshape(-1)]))
    mean = g.fresh("mean")
    return [helper.make_node("ReduceMean", [x, node.input[1]], [mean], keepdims=attribute(node, "keepdims", 1)),
            helper.make_node("Mul", [mean, g.constant(np.array(count, dtype), "count")], [output])]


def _reduce_sum(g: _Graph, node) -> list | None:
    """ReduceSum over constant axes as ReduceMean times the count (NNAPI: no ReduceSum)."""
    return _sum_as_mean(g, node, node.input[0], node.output[0])


ERF_P, ERF_A = 0.3275911, (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(g: _Graph, node) -> list | None:
    """Erf (NNAPI: none) by Abramowitz & Stegun 7.1.26 (1.5e-7; evaluated in float32, within 6e-7 of erf):
    erf(x) = sign(x) (1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-x^2)), t = 1 / (1 + p |x|), with
    |x| = Sqrt(x x) and sign(x) = Clip(x 1e30, -1, 1) (NNAPI's relu1), in ops both accelerators take."""
    x = node.input[0]
    dtype = g.np_dtype(x)
    if dtype != np.float32:
        return None

    def const(v, hint):
        return g.constant(np.array(v, dtype), hint)

    nodes = []

    def op(kind, *inputs, **attrs):
        out = g.fresh(kind.lower())
        nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    square = op("Mul", x, x)
    t = op("Div", const(1, "one"), op("Add", op("Mul", op("Sqrt", square), const(ERF_P, "erf_p")), const(1, "one")))
    poly = const(ERF_A[4], "erf_a")
    for a in reversed(ERF_A[:4]):
        poly = op("Add", op("Mul", poly, t), const(a, "erf_a"))
    tail = op("Mul", op("Mul", poly, t), op("Exp", op("Mul", square, const(-1, "minus_one"))))
    sign = op("Clip", op("Mul", x, const(1e30, "huge")), const(-1, "minus_one"), const(1, "one"))
    nodes.append(helper.make_node("Mul", [sign, op("Sub", const(1, "one"), tail)], list(node.output)))
    return nodes


def _reduce_l2(g: _Graph, node) -> list | None:
    """ReduceL2 over constant axes as Sqrt(ReduceMean(x x) x the count) (NNAPI and Core ML MLProgram: none)."""
    square, total = g.fresh("square"), g.fresh("total")
    summed = _sum_as_mean(g, node, square, total)
    if summed is None:
        return None
    return [helper.make_node("Mul", [node.input[0], node.input[0]], [square]), *summed,
            helper.make_node("Sqrt", [total], list(node.output))]


def _pixel_unshuffle(g: _Graph, node, consumers: dict) -> tuple[list, list] | None:
    """PixelUnshuffle's Reshape [N, C, H, W] -> [N, C, h, r, w, r], Transpose (0, 1, 3, 5, 2, 4), Reshape
    [N, C r r, h, w] (rank 6: Core ML takes <= 5, NNAPI 4) as one depthwise Conv of stride r whose one-hot
    r x r kernels send block pixel (i, j) of channel c to channel c r^2 + i r + j: x * 1 plus zeros, exact.
    Returns (the nodes, the nodes they replace) or None."""
    shape = g.shapes.get(node.output[0])
    if shape is None or len(shape) != 6 or shape[3] != shape[5] or shape[3] < 2:
        return None
    n, c, h, r, w, _ = shape
    source = node.input[0]
    users = consumers.get(node.output[0], [])
    if (g.shapes.get(source) != [n, c, h * r, w * r] or len(users) != 1 or users[0].op_type != "Transpose"
            or list(attribute(users[0], "perm", [])) != [0, 1, 3, 5, 2, 4]):
        return None
    after = consumers.get(users[0].output[0], [])
    if len(after) != 1 or after[0].op_type != "Reshape" or g.shapes.get(after[0].output[0]) != [n, c * r * r, h, w]:
        return None
    dtype = g.np_dtype(source)
    kernel = np.zeros((c, r, r, 1, r, r), dtype)
    for i in range(r):
        for j in range(r):
            kernel[:, i, j, 0, i, j] = 1
    conv = helper.make_node("Conv", [source, g.constant(kernel.reshape(c * r * r, 1, r, r), "unshuffle")],
                            list(after[0].output), group=c, kernel_shape=[r, r], strides=[r, r])
    return [conv], [users[0], after[0]]


def _strided_slice(g: _Graph, node) -> list | None:
    """x[:, :, ::sh, ::sw] of a rank-4 x (pSp's identity shortcut) as a max pooling of kernel 1 and stride (sh, sw),
    which it equals: ncnn's Crop takes no steps, the pooling every phone runtime takes."""
    given = [g.constants.get(name) if name else None for name in list(node.input[1:]) + [""] * (5 - len(node.input))]
    starts, ends, axes, steps = given
    if len(g.shapes.get(node.input[0], [])) != 4 or any(v is None for v in (starts, ends, axes, steps)):
        return None
    shape = g.shapes[node.input[0]]
    axes = [int(a) % 4 for a in axes]
    if not (set(axes) <= {2, 3} and (starts == 0).all() and (steps >= 1).all() and (steps > 1).any()
            and all(int(e) >= shape[a] for e, a in zip(ends, axes))):
        return None
    strides = [1, 1]
    for axis, step in zip(axes, steps):
        strides[axis - 2] = int(step)
    return [helper.make_node("MaxPool", [node.input[0]], list(node.output), kernel_shape=[1, 1], strides=strides)]


def _depth_to_space_dcr(g: _Graph, node, producer) -> bool:
    """DepthToSpace in CRD mode (NNAPI: DCR only) fed by a Conv of constant weights that feeds nothing else: the
    Conv's output channels reordered from CRD's c r^2 + i r + j to DCR's (i r + j) C + c, and the mode set to
    DCR; exact. False where that does not apply."""
    if attribute(node, "mode", "DCR") != "CRD" or producer is None:
        return False
    conv, users = producer
    weight = g.constants.get(conv.input[1]) if conv.op_type == "Conv" else None
    bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    if weight is None or users != 1 or (bias and bias not in g.constants):
        return False
    r = attribute(node, "blocksize")
    c = weight.shape[0] // (r * r)
    order = np.arange(c * r * r).reshape(c, r * r).T.reshape(-1)  # DCR channel k holds CRD channel order[k]
    conv.input[1] = g.constant(weight[order], "dcr_weight")
    if bias:
        conv.input[2] = g.constant(g.constants[bias][order], "dcr_bias")
    del node.attribute[:]
    node.attribute.extend([helper.make_attribute("blocksize", r), helper.make_attribute("mode", "DCR")])
    return True


REWRITES = {"LayerNormalization": _layer_norm, "ReduceSum": _reduce_sum, "ReduceL2": _reduce_l2, "Erf": _erf,
            "Resize": _resize, "Gather": _gather, "Expand": _expand, "BatchNormalization": _batch_norm,
            "Reciprocal": _reciprocal, "Min": _min, "Clip": _clip, "Pad": _pad, "ConvTranspose": _conv_transpose,
            "Slice": _strided_slice}
SEQUENCES = {"zero insertion (Reshape, Pad, Reshape)": _zero_insertion,
             "PixelUnshuffle (Reshape, Transpose, Reshape)": _pixel_unshuffle}  # each starts at a Reshape


def rewrite_for_phones(model: onnx.ModelProto) -> dict[str, int]:
    """Apply REWRITES and SEQUENCES in place where they hold for this graph; {what: times rewritten}."""
    g = _Graph(model)
    done: dict[str, int] = {}
    consumers = _consumers(model)
    producers = {o: n for n in model.graph.node for o in n.output}

    def count(what):
        done[what] = done.get(what, 0) + 1

    nodes, skip = [], set()
    for node in model.graph.node:
        if id(node) in skip:
            continue
        if node.op_type == "Reshape":
            found = next(((what, r) for what, seq in SEQUENCES.items() if (r := seq(g, node, consumers))), None)
            if found:
                what, (replacement, replaced) = found
                nodes.extend(replacement)
                skip.update(id(n) for n in replaced)
                count(what)
                continue
        if _fold(g, node):
            count("constant folded")
            continue
        if node.op_type == "DepthToSpace":
            source = producers.get(node.input[0])
            if _depth_to_space_dcr(g, node, source and (source, len(consumers.get(node.input[0], [])))):
                count("DepthToSpace CRD")
        replaced = _rewritten(g, node, REWRITES)
        if replaced is None:
            nodes.append(node)
        else:
            nodes.extend(replaced)
            count(node.op_type)
    _set_nodes(model, nodes)
    return done


def _consumers(model: onnx.ModelProto) -> dict[str, list]:
    """{tensor name: the nodes that take it}."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _rewritten(g: _Graph, node, table: dict) -> list | None:
    """The nodes `table`'s rewrite for this op gives (None where it has none or it does not hold)."""
    rewrite = table.get(node.op_type)
    return rewrite(g, node) if rewrite and node.domain in ("", "ai.onnx") else None


def _set_nodes(model: onnx.ModelProto, nodes: list) -> None:
    """The graph's nodes replaced by `nodes`, the constants nothing uses any more dropped, the model checked."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)


def _token_mean(g: _Graph, node) -> list | None:
    """ReduceMean (keepdims) of a rank-3 x over axis 2 as x @ (1/D ones [D, 1]), over axis 1 as (1/N ones [1, N]) @ x:
    the same mean, summed in another order."""
    shape = g.shapes.get(node.input[0])
    axes = g.constants.get(node.input[1]) if len(node.input) > 1 else None
    if shape is None or len(shape) != 3 or axes is None or attribute(node, "keepdims", 1) != 1:
        return None
    axes = sorted({int(a) % 3 for a in np.atleast_1d(axes)})
    dtype = g.np_dtype(node.input[0])
    if axes == [2]:
        ones = g.constant(np.full((shape[2], 1), 1.0 / shape[2], dtype), "mean_columns")
        return [helper.make_node("MatMul", [node.input[0], ones], list(node.output))]
    if axes == [1]:
        ones = g.constant(np.full((1, shape[1]), 1.0 / shape[1], dtype), "mean_rows")
        return [helper.make_node("MatMul", [ones, node.input[0]], list(node.output))]
    return None


def _squeeze_to_rank1(g: _Graph, node) -> list | None:
    shape = g.shapes.get(node.output[0])
    if shape is None or len(shape) != 1:
        return None
    return [helper.make_node("Reshape", [node.input[0], g.constant(np.array(shape, np.int64), "shape")],
                             list(node.output))]


def _at_most_as_float(g: _Graph, node, consumers: dict) -> list | None:
    """A float LessOrEqual(x, constant c) whose one consumer casts it to float32: the float mask it gives, as
    1 - Ceil(Clip(x - c, 0, 1)), written in the Cast's place."""
    x, c = node.input
    users = consumers.get(node.output[0], [])
    if (c not in g.constants or g.np_dtype(x) != np.float32 or len(users) != 1 or users[0].op_type != "Cast"
            or attribute(users[0], "to") != onnx.TensorProto.FLOAT
            or node.output[0] in {o.name for o in g.graph.output}):
        return None
    above, clipped, step = g.fresh("above"), g.fresh("clipped"), g.fresh("step")
    one = g.constant(np.array(1, np.float32), "one")
    return [helper.make_node("Sub", [x, c], [above]),
            helper.make_node("Clip", [above, g.constant(np.array(0, np.float32), "zero"), one], [clipped]),
            helper.make_node("Ceil", [clipped], [step]),
            helper.make_node("Sub", [one, step], list(users[0].output))]


def _pool_of_one_pixel(g: _Graph, node) -> list | None:
    """A MaxPool from a 1x1 map to a 1x1 map is the map itself: an Identity."""
    shape, out = g.shapes.get(node.input[0]), g.shapes.get(node.output[0])
    if shape is None or len(node.output) != 1 or shape[2:] != [1, 1] or out != shape:
        return None
    return [helper.make_node("Identity", [node.input[0]], list(node.output))]


NCNN_REWRITES = {"ReduceMean": _token_mean, "Squeeze": _squeeze_to_rank1, "MaxPool": _pool_of_one_pixel}


def rewrite_for_ncnn(model: onnx.ModelProto) -> dict[str, int]:
    """Apply NCNN_REWRITES in place where they hold, and _at_most_as_float (its Cast dropped); {op: times
    rewritten}."""
    g = _Graph(model)
    done: dict[str, int] = {}
    consumers = _consumers(model)
    nodes, skip = [], set()
    for node in model.graph.node:
        if id(node) in skip:
            continue
        if node.op_type == "LessOrEqual" and (replaced := _at_most_as_float(g, node, consumers)):
            skip.add(id(consumers[node.output[0]][0]))
        else:
            replaced = _rewritten(g, node, NCNN_REWRITES)
        if replaced is None:
            nodes.append(node)
        else:
            nodes.extend(replaced)
            done[node.op_type] = done.get(node.op_type, 0) + 1
    _set_nodes(model, nodes)
    return done
