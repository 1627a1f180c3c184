"""What ``cbr shape`` computes: every layer's shapes, costs and receptive field, without data.

Pure arithmetic on a :class:`~cbr_cli.spec.pipeline_spec.PipelineSpec` and an input size: no
image, no forward pass, no numpy at import.  Output sizes come from
:func:`cbr_cli.core.shapes.conv2d_geometry`, the function :func:`cbr_cli.core.ops.conv2d` itself
calls, so they are the shapes ``cbr apply`` produces — and what the engine rejects
(empty output, reflect padding too large, groups not dividing the channels) is rejected
here with the layer's name.  The only files read are ``.npy`` *headers* named by the
spec, to check their shapes against the channel counts as ``cbr apply`` would.

Conventions (one image, float32)
--------------------------------
Shapes
    ``(C, H, W)``.
Parameters
    What ``sum(p.numel() for p in module.parameters())`` counts in PyTorch: the conv
    weight ``out * in/groups * kH * kW``, its bias ``out`` (if any), and BatchNorm's
    affine weight and bias, ``2 * C``.  BatchNorm's ``running_mean`` and ``running_var``
    (``2 * C``) are *buffers*, counted separately; PyTorch's integer
    ``num_batches_tracked`` counter is not counted.
MACs
    Multiply-accumulates of the convolution: ``out * in/groups * kH * kW * H_out * W_out``.
    Taps that land on padding count (as ``torch.utils.flop_counter`` counts them); bias
    additions, BatchNorm and the activation (elementwise, ``C*H*W`` each) do not.
    FLOPs = 2 * MACs.
Activation memory
    ``4 * C * H_out * W_out`` bytes per stage output, summed over the layer's stages
    (conv, then bn and act if present), because ``cbr apply`` keeps every stage's output.
Receptive field
    Per axis, :class:`cbr_cli.core.shapes.ReceptiveField`: size, jump (product of strides) and
    the centre of the first output's field in input pixel coordinates (pixel ``i`` is
    centred at ``i``; negative means padding).  BatchNorm and activations keep it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from cbr_cli.core.shapes import AxisGeometry, ConvGeometry, ReceptiveField, conv2d_geometry
from cbr_cli.errors import CbrError
from cbr_cli.spec.pipeline_types import ConvSpec, LayerSpec, ParamSource, PipelineSpec

BYTES_PER_VALUE = 4  # float32
WARNING_KINDS = ("stride_drop", "asymmetric_padding", "same_strided", "bn_single_value")

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class LayerWarning:
    """Something legal but probably unintended about a layer.

    Attributes
    ----------
    layer : str
    kind : str
        One of :data:`WARNING_KINDS`.
    message : str
        One line, naming the layer (printed on stderr).
    short : str
        A few words for the table.
    """

    layer: str
    kind: str
    message: str
    short: str


@dataclass(frozen=True)
class LayerRow:
    """One layer (conv -> optional BN -> activation) of the stack."""

    name: str
    input_shape: Shape
    output_shape: Shape
    geometry: ConvGeometry
    groups: int
    padding_mode: str
    bn: str | None  # "batch", "running" or None
    activation: str  # "relu", "leaky_relu" or "none"
    negative_slope: float
    conv_weight_params: int
    conv_bias_params: int
    bn_params: int
    bn_buffers: int
    macs: int
    field_h: ReceptiveField
    field_w: ReceptiveField
    warnings: tuple[LayerWarning, ...] = ()

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages ``cbr apply`` runs and keeps: ``conv``, then ``bn`` and ``act``."""
        return (
            ("conv",)
            + (("bn",) if self.bn else ())
            + (("act",) if self.activation != "none" else ())
        )

    @property
    def params(self) -> int:
        return self.conv_weight_params + self.conv_bias_params + self.bn_params

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def activation_bytes(self) -> int:
        c, h, w = self.output_shape
        return len(self.stages) * BYTES_PER_VALUE * c * h * w

    def to_plain(self) -> dict[str, object]:
        g = self.geometry
        top, bottom, left, right = g.padding
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "kernel_size": [g.h.kernel_size, g.w.kernel_size],
            "dilation": [g.h.dilation, g.w.dilation],
            "effective_kernel": [g.h.effective_kernel, g.w.effective_kernel],
            "stride": [g.h.stride, g.w.stride],
            "padding": {"top": top, "bottom": bottom, "left": left, "right": right},
            "padding_mode": self.padding_mode,
            "groups": self.groups,
            "formula": {"H": g.h.formula(), "W": g.w.formula()},
            "bn": self.bn,
            "activation": self.activation,
            "stages": list(self.stages),
            "params": self.params,
            "params_detail": {
                "conv_weight": self.conv_weight_params,
                "conv_bias": self.conv_bias_params,
                "bn_affine": self.bn_params,
            },
            "buffers": self.bn_buffers,
            "macs": self.macs,
            "flops": self.flops,
            "receptive_field": [self.field_h.size, self.field_w.size],
            "jump": [self.field_h.jump, self.field_w.jump],
            "receptive_field_centre": [self.field_h.centre, self.field_w.centre],
            "activation_bytes": self.activation_bytes,
            "warnings": [{"kind": w.kind, "message": w.message} for w in self.warnings],
        }


@dataclass(frozen=True)
class StackResult:
    """Every layer of a pipeline for one input size, and the totals."""

    input_shape: Shape
    layers: tuple[LayerRow, ...]

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].output_shape if self.layers else self.input_shape

    @property
    def total_params(self) -> int:
        return sum(row.params for row in self.layers)

    @property
    def total_buffers(self) -> int:
        return sum(row.bn_buffers for row in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.layers)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    @property
    def total_activation_bytes(self) -> int:
        return sum(row.activation_bytes for row in self.layers)

    @property
    def warnings(self) -> tuple[LayerWarning, ...]:
        return tuple(w for row in self.layers for w in row.warnings)

    def to_plain(self) -> dict[str, object]:
        """The result as JSON-ready data; shapes are ``[C, H, W]`` lists."""
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "layers": [row.to_plain() for row in self.layers],
            "total_params": self.total_params,
            "total_buffers": self.total_buffers,
            "total_macs": self.total_macs,
            "total_flops": self.total_flops,
            "total_activation_bytes": self.total_activation_bytes,
            "units": {
                "macs": "multiply-accumulates of the convolutions for one image "
                "(bias, BatchNorm and activations not counted); FLOPs = 2 x MACs",
                "activation_bytes": "float32 bytes of every stage output (conv, bn, act) "
                "for one image",
                "receptive_field_centre": "input pixel coordinates of the first output's "
                "field centre (pixel i is centred at i)",
            },
            "warnings": [
                {"layer": w.layer, "kind": w.kind, "message": w.message} for w in self.warnings
            ],
        }


# ------------------------------------------------------------------- input size


def parse_input_size(text: str, color: str | None = None, flag: str = "--input") -> Shape:
    """``CxHxW`` or ``HxW`` → ``(C, H, W)``.

    For ``HxW`` the channel count comes from ``color`` (the config's ``input.color`` or
    ``--color``): 1 for ``gray``, 3 for ``rgb`` and, when no colour is given, 3 (an RGB
    image).  A ``CxHxW`` that contradicts ``color`` is an error: ``cbr apply`` would
    convert the image to ``color``'s channel count.
    """
    parts = re.split(r"\s*[x,×]\s*", text.strip().lower())
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise CbrError(
            f"{flag}: expected CxHxW or HxW with positive integers, e.g. 3x224x224 (got {text!r})"
        )
    numbers = [int(p) for p in parts]
    wanted = {"gray": 1, "rgb": 3}.get(color or "")
    if len(numbers) == 2:
        return (wanted or 3, numbers[0], numbers[1])
    if wanted is not None and numbers[0] != wanted:
        raise CbrError(
            f"{flag}: {numbers[0]} channels, but the input colour is {color} ({wanted} "
            f"channel{'s' if wanted > 1 else ''}); give HxW or a matching C (got {text!r})"
        )
    return (numbers[0], numbers[1], numbers[2])


# --------------------------------------------------------------------- analysis


def analyze(spec: PipelineSpec, input_shape: Shape) -> StackResult:
    """Shapes, parameters, MACs, receptive fields and warnings of every layer.

    Parameters
    ----------
    spec : PipelineSpec
    input_shape : (C, H, W)
        One image as the first layer sees it.

    Raises
    ------
    CbrError
        Naming the layer, when ``cbr apply`` would fail on this input size: an empty
        output, reflect/circular padding larger than the input, groups that do not
        divide the input channels, a ``.npy`` or list of the wrong size.
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise CbrError(f"input shape must be 3 positive sizes (C, H, W), but got {input_shape}")
    channels = input_shape[0]
    for name, source in (("input.mean", spec.input.mean), ("input.std", spec.input.std)):
        if source is not None:
            source.check(channels, name)
    rows = []
    field_h = field_w = ReceptiveField()
    shape = input_shape
    for layer in spec.layers:
        row = _layer_row(layer, shape, field_h, field_w)
        rows.append(row)
        shape, field_h, field_w = row.output_shape, row.field_h, row.field_w
    return StackResult(input_shape, tuple(rows))


def _where(conv: ConvSpec, key: str) -> str:
    """``FILE:LINE:COL: key.path: `` or ``--flag: `` of a conv key, if known."""
    where = conv.where.get(key) or conv.where.get("conv", "")
    return f"{where}: " if where and where != "flags" else ""


def _layer_row(
    layer: LayerSpec, input_shape: Shape, field_h: ReceptiveField, field_w: ReceptiveField
) -> LayerRow:
    conv = layer.conv
    label = f"layer {layer.name!r}"
    c_in, h_in, w_in = input_shape
    conv.check_groups(c_in, label)
    per_group = c_in // conv.groups
    if conv.weight is not None:
        conv.check_weight_file(c_in)
    if isinstance(conv.bias, ParamSource):
        conv.bias.check(conv.out_channels, f"bias of {label}")
    try:
        geo = conv2d_geometry(
            (h_in, w_in),
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.padding_mode,
        )
    except CbrError as exc:
        raise CbrError(f"{_where(conv, 'conv')}{label}: {exc.message}", exc.exit_code) from None

    out = conv.out_channels
    h_out, w_out = geo.out_hw
    kh, kw = conv.kernel_size
    weight_params = out * per_group * kh * kw
    bias_params = out if conv.bias is not False else 0
    bn_params = bn_buffers = 0
    if layer.bn is not None:
        bn_params = bn_buffers = 2 * out
        for key in ("weight", "bias", "running_mean", "running_var"):
            source = getattr(layer.bn, key)
            if source is not None:
                source.check(out, f"bn.{key} of {label}")

    return LayerRow(
        name=layer.name,
        input_shape=input_shape,
        output_shape=(out, h_out, w_out),
        geometry=geo,
        groups=conv.groups,
        padding_mode=conv.padding_mode,
        bn=layer.bn.mode if layer.bn is not None else None,
        activation=layer.activation,
        negative_slope=layer.negative_slope,
        conv_weight_params=weight_params,
        conv_bias_params=bias_params,
        bn_params=bn_params,
        bn_buffers=bn_buffers,
        macs=weight_params * h_out * w_out,
        field_h=field_h.through(geo.h),
        field_w=field_w.through(geo.w),
        warnings=tuple(_warnings(layer, geo)),
    )


# --------------------------------------------------------------------- warnings


@dataclass(frozen=True)
class _Side:
    """Words for one axis, or for both when their arithmetic is identical."""

    symbol: str
    unit: str
    units: str
    before: str
    after: str
    shift: str


_H = _Side("H", "row", "rows", "top", "bottom", "below")
_W = _Side("W", "column", "columns", "left", "right", "right of")
_HW = _Side(
    "H and W", "row and column", "rows and columns", "top/left", "bottom/right",
    "below and right of",
)  # fmt: skip


def _sides(geo: ConvGeometry) -> list[tuple[_Side, AxisGeometry]]:
    """One entry per axis, merged into one when both axes compute the same thing."""
    return [(_HW, geo.h)] if geo.h == geo.w else [(_H, geo.h), (_W, geo.w)]


def _warnings(layer: LayerSpec, geo: ConvGeometry) -> list[LayerWarning]:
    name = layer.name
    label = f"layer {name!r}"
    found = []
    tf_same = [
        (side, axis)
        for side, axis in _sides(geo)
        if layer.conv.padding == "same" and axis.stride > 1
    ]
    if tf_same:
        found.append(
            LayerWarning(
                name,
                "same_strided",
                f"{label}: padding='same' with stride > 1 is refused by PyTorch; cbr follows "
                "TensorFlow/Keras SAME: out = ceil(in / stride), total padding "
                "max((out - 1)*stride + effective_kernel - in, 0), the odd one at the "
                "bottom/right; " + "; ".join(_same_strided_text(s, a) for s, a in tf_same),
                "TF-style 'same' (stride > 1)",
            )
        )
    for side, axis in _sides(geo):
        lost = axis.dropped - axis.pad_after
        if lost > 0:
            found.append(
                LayerWarning(
                    name,
                    "stride_drop",
                    f"{label}: stride {axis.stride} never reads the last {lost} input "
                    f"{side.units if lost > 1 else side.unit} at the {side.after} "
                    f"({side.symbol}: ({axis.size_in} + {axis.pad_before} + {axis.pad_after} - "
                    f"{axis.effective_kernel}) mod {axis.stride} = {axis.dropped} left over, "
                    f"{axis.pad_after} of them padding)",
                    f"stride drops {lost} {side.after} {side.units if lost > 1 else side.unit}",
                )
            )
        if axis.pad_before != axis.pad_after and (side, axis) not in tf_same:
            found.append(
                LayerWarning(
                    name,
                    "asymmetric_padding",
                    f"{label}: padding='same' with the even effective kernel "
                    f"{axis.effective_kernel} ({side.symbol}) pads {axis.pad_before} "
                    f"{side.before} and {axis.pad_after} {side.after}, the odd one at the "
                    f"{side.after} as PyTorch does: each output is centred half a pixel "
                    f"{side.shift} its input pixel",
                    f"even kernel: pads {axis.pad_before} {side.before}, "
                    f"{axis.pad_after} {side.after}",
                )
            )
    h_out, w_out = geo.out_hw
    if layer.bn is not None and layer.bn.mode == "batch" and h_out * w_out == 1:
        found.append(
            LayerWarning(
                name,
                "bn_single_value",
                f"{label}: the output is 1x1, so BatchNorm with batch statistics needs more "
                "than one image per batch (cbr apply on a single image fails); "
                "use bn mode 'running' to normalise with given statistics",
                "1x1: batch BN needs > 1 image",
            )
        )
    return found


def _same_strided_text(side: _Side, axis: AxisGeometry) -> str:
    size_out = math.ceil(axis.size_in / axis.stride)
    total = axis.pad_before + axis.pad_after
    return (
        f"{side.symbol}: out = ceil({axis.size_in} / {axis.stride}) = {size_out}, padding "
        f"max(({size_out} - 1)*{axis.stride} + {axis.effective_kernel} - {axis.size_in}, 0) "
        f"= {total}: {axis.pad_before} {side.before}, {axis.pad_after} {side.after}"
    )
