"""YOLO-NAS S / M / L in Flax NNX, NHWC, following super-gradients 3.7.1 (docs/architecture.md).

Every submodule is named after its path in the super-gradients state dict
(`backbone.stage1.blocks.bottlenecks.0.cv1.branch_3x3.conv.weight` is
`model.backbone.stage1.blocks.bottlenecks[0].cv1.branch_3x3.conv.kernel` here), so converting a
state dict is a mechanical rename plus transposes (`converters.state_dict`).

QARepVGG blocks exist in the three forms of the reference (`FORMS`): "training" (3x3+BN, 1x1 and
identity branches, then post-BN), "partial" (one 3x3 conv with bias, then post-BN) and "full" (one
3x3 conv with bias). `nasjax.fusion` turns the variables of one form into those of the next.

All numbers come from the variant config (`configs/`); this file holds none of its own.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from nasjax.configs import YoloNASConfig, get_config
from nasjax.model import box_decoding
from nasjax.model.conv import Conv2d

FORMS = ("training", "partial", "full")

_NHWC = ("NHWC", "HWIO", "NHWC")


def _check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"unknown QARepVGG form {form!r}; expected one of {FORMS}")
    return form


def _same_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    # PyTorch pads k // 2 on every side; "SAME" would pad (0, 1) for stride 2 and shift the grid.
    p = kernel_size // 2
    return ((p, p), (p, p))


def _conv(in_ch: int, out_ch: int, kernel_size: int, stride: int, bias: bool, rngs: nnx.Rngs) -> nnx.Conv:
    return Conv2d(
        in_ch,
        out_ch,
        (kernel_size, kernel_size),
        strides=stride,
        padding=_same_padding(kernel_size),
        use_bias=bias,
        rngs=rngs,
    )


def _batch_norm(channels: int, config: YoloNASConfig, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # Flax's momentum is the weight of the running value, PyTorch's that of the new batch statistic.
    return nnx.BatchNorm(
        channels,
        use_running_average=True,
        momentum=1.0 - config.bn_momentum,
        epsilon=config.bn_eps,
        rngs=rngs,
    )


def _conv_then_bn(conv: nnx.Conv, bn: nnx.BatchNorm | None, x: jax.Array) -> jax.Array:
    """conv(x) followed by bn, with bn folded into the kernel when it uses running statistics.

    Folding costs a few elementwise ops on the weights instead of a full pass over the activations;
    the result equals the unfolded one to float rounding.
    """
    if bn is None or not bn.use_running_average:
        y = conv(x)
        return y if bn is None else bn(y)
    scale = bn.scale[...] * jax.lax.rsqrt(bn.var[...] + bn.epsilon)
    shift = bn.bias[...] - bn.mean[...] * scale
    if conv.bias is not None:
        shift = shift + conv.bias[...] * scale
    kernel = conv.kernel[...] * scale.astype(conv.kernel.dtype)
    y = jax.lax.conv_general_dilated(
        x,
        kernel.astype(x.dtype),
        window_strides=conv.strides if isinstance(conv.strides, tuple) else (conv.strides,) * 2,
        padding=conv.padding,
        dimension_numbers=_NHWC,
    )
    return y + shift.astype(y.dtype)


class ConvBN(nnx.Module):
    """Conv2d (no bias) then BatchNorm: `<m>.conv`, `<m>.bn`. QARepVGG's `branch_3x3`."""

    def __init__(self, in_ch, out_ch, kernel_size, stride, config: YoloNASConfig, *, rngs: nnx.Rngs):
        self.conv = _conv(in_ch, out_ch, kernel_size, stride, False, rngs)
        self.bn = _batch_norm(out_ch, config, rngs)

    def __call__(self, x):
        return _conv_then_bn(self.conv, self.bn, x)


class ConvBNAct(ConvBN):
    """super-gradients `Conv` (conv_bn_act_block.py): Conv2d → BN → ReLU, named `<m>.conv`, `<m>.bn`."""

    def __call__(self, x):
        return jax.nn.relu(super().__call__(x))


class ConvBNReLU(nnx.Module):
    """super-gradients `ConvBNReLU`: the same layers inside a Sequential, named `<m>.seq.conv`, `<m>.seq.bn`."""

    def __init__(self, in_ch, out_ch, kernel_size, config: YoloNASConfig, *, rngs: nnx.Rngs):
        self.seq = ConvBN(in_ch, out_ch, kernel_size, 1, config, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.seq(x))


class QARepVGGBlock(nnx.Module):
    """QARepVGG (S4 variant, no SE, alpha fixed at 1) in one of three forms (docs/architecture.md#qarepvgg).

    training: ReLU(post_bn(BN(conv3x3(x)) + conv1x1(x) + x))   (identity only when
              `use_residual_connection`: Cin == Cout and stride 1)
    partial:  ReLU(post_bn(rbr_reparam(x)))
    full:     ReLU(rbr_reparam(x))
    The reference's unused `rbr_reparam` placeholder of the training form is not built.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        use_residual_connection: bool,
        config: YoloNASConfig,
        form: str,
        *,
        rngs: nnx.Rngs,
    ):
        self.in_channels, self.out_channels, self.stride = in_ch, out_ch, stride
        self.use_residual_connection = use_residual_connection and in_ch == out_ch and stride == 1
        self.form = _check_form(form)
        if form == "training":
            self.branch_3x3 = ConvBN(in_ch, out_ch, 3, stride, config, rngs=rngs)
            self.branch_1x1 = _conv(in_ch, out_ch, 1, stride, True, rngs)
        else:
            self.rbr_reparam = _conv(in_ch, out_ch, 3, stride, True, rngs)
        if form != "full":
            self.post_bn = _batch_norm(out_ch, config, rngs)

    def __call__(self, x):
        if self.form == "training":
            y = self.branch_3x3(x) + self.branch_1x1(x)
            if self.use_residual_connection:
                y = y + x
            y = self.post_bn(y)
        else:
            y = _conv_then_bn(self.rbr_reparam, getattr(self, "post_bn", None), x)
        return jax.nn.relu(y)


class YoloNASBottleneck(nnx.Module):
    """out = alpha * x + cv2(cv1(x)), alpha a learnable scalar (shape (1,), initialised to 1)."""

    def __init__(self, channels: int, block: str, config: YoloNASConfig, form: str, *, rngs: nnx.Rngs):
        if block == "qarepvgg":
            make = lambda: QARepVGGBlock(channels, channels, 1, True, config, form, rngs=rngs)  # noqa: E731
        elif block == "conv":
            make = lambda: ConvBNAct(channels, channels, 3, 1, config, rngs=rngs)  # noqa: E731
        else:
            raise ValueError(f"unknown bottleneck block {block!r}")
        self.alpha = nnx.Param(jnp.ones((1,), jnp.float32))
        self.cv1 = make()
        self.cv2 = make()

    def __call__(self, x):
        return self.alpha[...].astype(x.dtype) * x + self.cv2(self.cv1(x))


class YoloNASCSPLayer(nnx.Module):
    """CSP: conv1 → bottleneck chain, conv2 in parallel, concat, conv3 (docs/architecture.md#csp)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        num_blocks: int,
        hidden: int,
        block: str,
        concat_intermediates: bool,
        config: YoloNASConfig,
        form: str,
        *,
        rngs: nnx.Rngs,
    ):
        self.concat_intermediates = concat_intermediates
        self.conv1 = ConvBNAct(in_ch, hidden, 1, 1, config, rngs=rngs)
        self.conv2 = ConvBNAct(in_ch, hidden, 1, 1, config, rngs=rngs)
        concat_ch = hidden * (2 + num_blocks * int(concat_intermediates))
        self.conv3 = ConvBNAct(concat_ch, out_ch, 1, 1, config, rngs=rngs)
        self.bottlenecks = nnx.List(
            [YoloNASBottleneck(hidden, block, config, form, rngs=rngs) for _ in range(num_blocks)]
        )

    def __call__(self, x):
        a = self.conv1(x)
        outputs = [a]
        for bottleneck in self.bottlenecks:
            outputs.append(bottleneck(outputs[-1]))
        c = self.conv2(x)
        # Channel order matters for weight compatibility: chain input, every output, conv2 last.
        parts = outputs + [c] if self.concat_intermediates else [outputs[-1], c]
        return self.conv3(jnp.concatenate(parts, axis=-1))


class YoloNASStem(nnx.Module):
    def __init__(self, out_ch: int, config: YoloNASConfig, form: str, *, rngs: nnx.Rngs):
        self.conv = QARepVGGBlock(3, out_ch, 2, False, config, form, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class YoloNASStage(nnx.Module):
    def __init__(self, in_ch: int, stage, config: YoloNASConfig, form: str, *, rngs: nnx.Rngs):
        self.downsample = QARepVGGBlock(in_ch, stage.out_channels, 2, False, config, form, rngs=rngs)
        self.blocks = YoloNASCSPLayer(
            stage.out_channels,
            stage.out_channels,
            stage.num_blocks,
            stage.hidden_channels,
            "qarepvgg",
            stage.concat_intermediates,
            config,
            form,
            rngs=rngs,
        )

    def __call__(self, x):
        return self.blocks(self.downsample(x))


def _max_pool_same(x: jax.Array, size: int) -> jax.Array:
    """Max pool, stride 1, padded to keep the size (-inf padding), NHWC.

    Flax's `nnx.max_pool` (looked up at call time) is the same `lax.reduce_window`, bit for bit; calling
    it rather than reduce_window lets jax2onnx see a 2-D pooling and write one ONNX MaxPool, where a raw
    4-D reduce_window becomes a pooling ONNX Runtime refuses (docs/export.md#onnx)."""
    return nnx.max_pool(x, window_shape=(size, size), strides=(1, 1), padding="SAME")


class SPP(nnx.Module):
    """cv1 → [x, maxpool5, maxpool9, maxpool13] → cv2 (pools in parallel on cv1's output)."""

    def __init__(self, in_ch: int, out_ch: int, pool_sizes, config: YoloNASConfig, *, rngs: nnx.Rngs):
        hidden = in_ch // 2
        self.pool_sizes = tuple(pool_sizes)
        self.cv1 = ConvBNAct(in_ch, hidden, 1, 1, config, rngs=rngs)
        self.cv2 = ConvBNAct(hidden * (len(self.pool_sizes) + 1), out_ch, 1, 1, config, rngs=rngs)

    def __call__(self, x):
        x = self.cv1(x)
        pooled, previous, previous_size = [], x, 1
        for size in self.pool_sizes:
            # Stride-1 max pools compose: pool_a(pool_b(x)) == pool_{a+b-1}(x) with -inf padding, so
            # 9 and 13 reuse the previous pool (the SPPF trick), exactly and with far fewer compares.
            step = size - previous_size + 1
            if previous_size > 1 and step >= 1 and step % 2 == 1:
                previous = _max_pool_same(previous, step)
            else:
                previous = _max_pool_same(x, size)
            previous_size = size
            pooled.append(previous)
        return self.cv2(jnp.concatenate([x] + pooled, axis=-1))


class NStageBackbone(nnx.Module):
    def __init__(self, config: YoloNASConfig, form: str, *, rngs: nnx.Rngs):
        self.stem = YoloNASStem(config.stem_channels, config, form, rngs=rngs)
        in_ch = config.stem_channels
        for i, stage in enumerate(config.stages, start=1):
            setattr(self, f"stage{i}", YoloNASStage(in_ch, stage, config, form, rngs=rngs))
            in_ch = stage.out_channels
        self.context_module = SPP(in_ch, in_ch, config.spp_pool_sizes, config, rngs=rngs)

    def __call__(self, x, features: dict | None = None):
        x = self.stem(x)
        outs = {"stem": x}
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x)
            outs[f"stage{i}"] = x
        outs["context_module"] = self.context_module(x)
        if features is not None:
            features.update(outs)
        return outs["stage1"], outs["stage2"], outs["stage3"], outs["context_module"]


class ConvTranspose2x2(nnx.Module):
    """PyTorch ConvTranspose2d(kernel 2, stride 2, bias): every input pixel becomes a 2x2 output patch.

    kernel (2, 2, in, out), i.e. PyTorch's (in, out, kh, kw) transposed. Written as one matmul and a
    depth-to-space reshape, which is exact (no overlapping taps) and lowers to plain TFLite ops.
    """

    def __init__(self, in_ch: int, out_ch: int, *, rngs: nnx.Rngs):
        bound = 1.0 / (out_ch * 4) ** 0.5
        self.kernel = nnx.Param(jax.random.uniform(rngs.params(), (2, 2, in_ch, out_ch), minval=-bound, maxval=bound))
        self.bias = nnx.Param(jnp.zeros((out_ch,), jnp.float32))

    def __call__(self, x):
        b, h, w, _ = x.shape
        y = jnp.einsum("bhwi,pqio->bhpwqo", x, self.kernel[...].astype(x.dtype))
        return y.reshape(b, 2 * h, 2 * w, -1) + self.bias[...].astype(x.dtype)


class YoloNASUpStage(nnx.Module):
    """(x, skip1, skip2) → (x_inter, out): upsample x, reduce skip1, downsample skip2, concat, CSP."""

    def __init__(self, in_ch, skip1_ch, skip2_ch, stage, config: YoloNASConfig, form, *, rngs: nnx.Rngs):
        c = stage.out_channels
        self.reduce_skip1 = ConvBNAct(skip1_ch, c, 1, 1, config, rngs=rngs)
        self.reduce_skip2 = ConvBNAct(skip2_ch, c, 1, 1, config, rngs=rngs)
        self.conv = ConvBNAct(in_ch, c, 1, 1, config, rngs=rngs)
        self.upsample = ConvTranspose2x2(c, c, rngs=rngs)
        self.downsample = ConvBNAct(c, c, 3, 2, config, rngs=rngs)
        self.reduce_after_concat = ConvBNAct(3 * c, c, 1, 1, config, rngs=rngs)
        self.blocks = YoloNASCSPLayer(
            c, c, stage.num_blocks, stage.hidden_channels, "qarepvgg", False, config, form, rngs=rngs
        )

    def __call__(self, x, skip1, skip2):
        x_inter = self.conv(x)
        up = self.upsample(x_inter)
        s1 = self.reduce_skip1(skip1)
        s2 = self.downsample(self.reduce_skip2(skip2))
        x = self.reduce_after_concat(jnp.concatenate([up, s1, s2], axis=-1))
        return x_inter, self.blocks(x)


class YoloNASDownStage(nnx.Module):
    """(x, skip) → out: stride-2 conv on x to c/2, concat with skip, CSP with Conv-3x3 bottlenecks."""

    def __init__(self, in_ch, skip_ch, stage, config: YoloNASConfig, form, *, rngs: nnx.Rngs):
        c = stage.out_channels
        self.conv = ConvBNAct(in_ch, c // 2, 3, 2, config, rngs=rngs)
        self.blocks = YoloNASCSPLayer(
            c // 2 + skip_ch, c, stage.num_blocks, stage.hidden_channels, "conv", False, config, form, rngs=rngs
        )

    def __call__(self, x, skip):
        return self.blocks(jnp.concatenate([self.conv(x), skip], axis=-1))


class YoloNASPANNeckWithC2(nnx.Module):
    def __init__(self, config: YoloNASConfig, form: str, *, rngs: nnx.Rngs):
        c2, c3, c4, c5 = (s.out_channels for s in config.stages)  # SPP keeps stage4's width
        n1, n2 = config.neck1, config.neck2
        self.neck1 = YoloNASUpStage(c5, c4, c3, n1, config, form, rngs=rngs)
        self.neck2 = YoloNASUpStage(n1.out_channels, c3, c2, n2, config, form, rngs=rngs)
        self.neck3 = YoloNASDownStage(n2.out_channels, n2.out_channels, config.neck3, config, form, rngs=rngs)
        self.neck4 = YoloNASDownStage(config.neck3.out_channels, n1.out_channels, config.neck4, config, form, rngs=rngs)

    def __call__(self, inputs, features: dict | None = None):
        c2, c3, c4, c5 = inputs
        n1_inter, x = self.neck1(c5, c4, c3)
        n2_inter, p3 = self.neck2(x, c3, c2)
        p4 = self.neck3(p3, n2_inter)
        p5 = self.neck4(p4, n1_inter)
        if features is not None:
            features.update(
                neck1_inter=n1_inter, neck1_out=x, neck2_inter=n2_inter, neck2_out=p3, neck3=p4, neck4=p5
            )
        return p3, p4, p5


class YoloNASDFLHead(nnx.Module):
    """stem 1x1 → (cls_convs → cls_pred, reg_convs → reg_pred); returns (reg map, cls map)."""

    def __init__(self, in_ch: int, inter_ch: int, config: YoloNASConfig, *, rngs: nnx.Rngs):
        self.stem = ConvBNReLU(in_ch, inter_ch, 1, config, rngs=rngs)
        self.cls_convs = nnx.List([ConvBNReLU(inter_ch, inter_ch, 3, config, rngs=rngs)])
        self.reg_convs = nnx.List([ConvBNReLU(inter_ch, inter_ch, 3, config, rngs=rngs)])
        self.cls_pred = _conv(inter_ch, config.num_classes, 1, 1, True, rngs)
        self.reg_pred = _conv(inter_ch, 4 * (config.reg_max + 1), 1, 1, True, rngs)
        # super-gradients' only explicit init: the class bias starts at the logit of the prior.
        prior = config.cls_prior_prob
        self.cls_pred.bias[...] = jnp.full((config.num_classes,), -jnp.log((1 - prior) / prior))

    def __call__(self, x):
        s = self.stem(x)
        cls_feat, reg_feat = s, s
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.reg_pred(reg_feat), self.cls_pred(cls_feat)


class YoloNASOutput(NamedTuple):
    """What super-gradients' forward returns, NHWC-flattened to (B, N, ...), anchors level by level."""

    boxes: jax.Array  # (B, N, 4) xyxy in input pixels
    scores: jax.Array  # (B, N, C) sigmoid probabilities
    cls_logits: jax.Array  # (B, N, C)
    reg_distri: jax.Array  # (B, N, 4 * (reg_max + 1)) raw DFL logits, side-major (l, t, r, b)
    anchors: jax.Array  # (N, 4) xyxy pixel boxes of size grid_cell_scale * stride (training assigner)
    anchor_points: jax.Array  # (N, 2) cell centres in pixels
    stride_tensor: jax.Array  # (N, 1)


class NDFLHeads(nnx.Module):
    def __init__(self, config: YoloNASConfig, *, rngs: nnx.Rngs):
        self.strides = tuple(config.strides)
        self.reg_max = config.reg_max
        self.grid_cell_offset = config.grid_cell_offset
        self.grid_cell_scale = config.grid_cell_scale
        for i, (in_ch, inter) in enumerate(zip(config.neck_out_channels, config.head_inter_channels), start=1):
            setattr(self, f"head{i}", YoloNASDFLHead(in_ch, inter, config, rngs=rngs))

    def __call__(self, feats, features: dict | None = None) -> YoloNASOutput:
        reg_maps, cls_maps, sizes = [], [], []
        for i, feat in enumerate(feats, start=1):
            reg, cls = getattr(self, f"head{i}")(feat)
            if features is not None:
                features[f"head{i}_reg"], features[f"head{i}_cls"] = reg, cls
            b, h, w, _ = reg.shape
            reg_maps.append(reg.reshape(b, h * w, -1))
            cls_maps.append(cls.reshape(b, h * w, -1))
            sizes.append((h, w))
        reg_distri = jnp.concatenate(reg_maps, axis=1)
        cls_logits = jnp.concatenate(cls_maps, axis=1)
        grid = box_decoding.make_anchors(sizes, self.strides, self.grid_cell_offset, self.grid_cell_scale)
        boxes = box_decoding.decode_dfl_boxes(reg_distri, grid.anchor_points, grid.stride_tensor, self.reg_max)
        scores = jax.nn.sigmoid(cls_logits)
        return YoloNASOutput(
            boxes, scores, cls_logits, reg_distri, grid.anchors, grid.anchor_points, grid.stride_tensor
        )


class YoloNAS(nnx.Module):
    """YOLO-NAS: backbone (stem, stage1..4, SPP) → PAN neck → three DFL heads.

    Input: (B, H, W, 3) RGB in [0, 1], H and W multiples of 32. Output: `YoloNASOutput`.
    """

    def __init__(self, config: YoloNASConfig, form: str = "full", *, rngs: nnx.Rngs):
        self.config = config
        self.form = _check_form(form)
        self.backbone = NStageBackbone(config, form, rngs=rngs)
        self.neck = YoloNASPANNeckWithC2(config, form, rngs=rngs)
        self.heads = NDFLHeads(config, rngs=rngs)

    def __call__(self, images, features: dict | None = None) -> YoloNASOutput:
        """Forward pass. Pass a dict as `features` to have the named intermediates written into it."""
        return self.heads(self.neck(self.backbone(images, features), features), features)


def _variant(name: str, form: str = "full", *, num_classes: int | None = None, rngs: nnx.Rngs) -> YoloNAS:
    config = get_config(name) if num_classes is None else get_config(name, num_classes=num_classes)
    return YoloNAS(config, form, rngs=rngs)


YoloNAS_S = functools.partial(_variant, "yolo_nas_s")
YoloNAS_M = functools.partial(_variant, "yolo_nas_m")
YoloNAS_L = functools.partial(_variant, "yolo_nas_l")
