"""The core model object the pipelines take: variables + jitted pure functions, no I/O.

`Network(images)` runs `forward(graphdef, variables, images)` under `jax.jit`, which compiles once
per input shape and dtype. Input checks happen outside the jitted core, so a bad input gets a clear
message instead of an XLA shape error.

`Network.detect_batch` is the batch interface that predict and validate call: pre-processed uint8
images in, padded detections out, with forward + decoding + NMS in one jitted function (`detect`)
and the batch split over this process's devices. The exported runners (`nasjax.export.runners`)
implement the same interface (`BatchDetector`), so the pipelines never ask which one they hold.

The user-facing `nasjax.Detector` (nasjax/detector.py) adds predict / val / export / train on top of
this class; nothing here or in the pipelines imports it.
"""
from __future__ import annotations

import weakref
from typing import Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nasjax.data.preprocessing import UNIT_SCALE_TABLE
from nasjax.model import fusion, nms
from nasjax.model import yolo_nas as models
from nasjax.model.nms import NMSSettings
from nasjax.utils.devices import local_data_mesh
from nasjax.weights.registry import COCO_PREPROCESSING, Preprocessing

STRIDE = 32  # the largest feature stride: input sides must be multiples of it


def forward(graphdef: nnx.GraphDef, variables: nnx.State, images: jax.Array) -> models.YoloNASOutput:
    """The pure function at the core: (variables, images) → `YoloNASOutput`."""
    return nnx.merge(graphdef, variables)(images)


# One jitted function for all detectors: the graphdef is static (hashable), so detectors with the same
# architecture and form share compiled executables, keyed by input shape and dtype.
jit_forward = jax.jit(forward, static_argnums=0)


def features_forward(graphdef: nnx.GraphDef, variables: nnx.State, images: jax.Array):
    """Like `forward`, plus the named intermediates (stem, stage1..4, context_module, neck*, head*)."""
    features: dict = {}
    out = nnx.merge(graphdef, variables)(images, features)
    return out, features


jit_features_forward = jax.jit(features_forward, static_argnums=0)


def detect(
    graphdef: nnx.GraphDef,
    variables: nnx.State,
    images: jax.Array,
    conf: jax.Array,
    iou_threshold: jax.Array,
    *,
    top_k: int,
    max_det: int,
    multi_label: bool,
    agnostic: bool,
    compute_dtype=np.dtype(np.float32),
) -> nms.Detections:
    """The pure device function: (B, H, W, 3) images → padded detections in network-input pixels.

    images: uint8 pixels (scaled to [0, 1] exactly as super-gradients does) or floats in [0, 1]; cast
    to `compute_dtype`, which should be the dtype of the floating variables. NMS runs in float32.
    iou_threshold: from `nms.iou_compare_threshold`.
    """
    if images.dtype == jnp.uint8:
        images = jnp.asarray(UNIT_SCALE_TABLE)[images]
    out = forward(graphdef, variables, images.astype(compute_dtype))
    return nms.non_max_suppression(
        out.boxes, out.scores, conf, iou_threshold,
        top_k=top_k, max_det=max_det, multi_label=multi_label, agnostic=agnostic,
    )


jit_detect = jax.jit(
    detect, static_argnums=0, static_argnames=("top_k", "max_det", "multi_label", "agnostic", "compute_dtype")
)


class BatchDetector(Protocol):
    """What predict and validate need of a model: the JAX `Network` and the exported runners alike."""

    config: object  # a YoloNASConfig
    preprocessing: Preprocessing  # the weights' own resize / pad numbers
    class_names: list[str] | None
    num_classes: int

    def batch_size_for(self, requested: int) -> int:
        """The batch size this model runs for a requested one (a device multiple, or a fixed batch)."""

    def detect_batch(self, images: np.ndarray, settings: NMSSettings, dtype=None) -> nms.Detections:
        """(B, H, W, 3) uint8 network inputs → padded detections (numpy) in network-input pixels."""


# network → (the variables object it was made from, dtype, mesh devices, placed variables); re-made
# when any of these changes.
_placed_variables: "weakref.WeakKeyDictionary[Network, tuple]" = weakref.WeakKeyDictionary()


def placed_variables(network: "Network", mesh: Mesh, dtype) -> nnx.State:
    """The network's variables cast to `dtype` (floating ones) and replicated over the mesh."""
    key = (jnp.dtype(dtype), tuple(mesh.devices.flat))
    cached = _placed_variables.get(network)
    if cached is not None and cached[0] is network.variables and cached[1] == key:
        return cached[2]

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    variables = jax.device_put(jax.tree.map(cast, network.variables), NamedSharding(mesh, PartitionSpec()))
    _placed_variables[network] = (network.variables, key, variables)
    return variables


def check_images(images) -> tuple[int, int, int]:
    """Validate a batch of images for the network; returns (B, H, W)."""
    shape = getattr(images, "shape", None)
    dtype = getattr(images, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"expected an array of images (B, H, W, 3), got {type(images).__name__}")
    if len(shape) != 4:
        hint = " (add a batch axis: images[None])" if len(shape) == 3 else ""
        raise ValueError(f"expected images of shape (B, H, W, 3), got rank {len(shape)} shape {tuple(shape)}{hint}")
    if shape[-1] != 3:
        hint = "; this looks like NCHW: transpose with images.transpose(0, 2, 3, 1)" if shape[1] == 3 else ""
        raise ValueError(f"expected 3 RGB channels last (B, H, W, 3), got shape {tuple(shape)}{hint}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"expected float images with values in [0, 1], got dtype {dtype}; "
            "divide uint8 pixels by 255 (or use predict(), which pre-processes files and arrays)"
        )
    b, h, w, _ = shape
    if h % STRIDE or w % STRIDE or h == 0 or w == 0:
        raise ValueError(
            f"image height and width must be positive multiples of {STRIDE}, got {h}x{w}; "
            f"pad or resize to e.g. {max(STRIDE, -(-h // STRIDE) * STRIDE)}x{max(STRIDE, -(-w // STRIDE) * STRIDE)}"
        )
    return b, h, w


class Network:
    """A YOLO-NAS model ready to run: `boxes, scores = network(images)`.

    images: (B, H, W, 3) float RGB in [0, 1], H and W multiples of 32.
    boxes: (B, N, 4) xyxy in input pixels; scores: (B, N, num_classes) after sigmoid.
    """

    def __init__(self, model: models.YoloNAS, class_names: Sequence[str] | None = None,
                 preprocessing: Preprocessing | None = None):
        model.eval()
        self.config = model.config
        self.form = model.form
        self.graphdef, self.variables = nnx.split(model)
        self.class_names = list(class_names) if class_names is not None else None
        # How these weights expect their input (resize, pad): a fact of the weights, not the architecture.
        self.preprocessing = preprocessing or COCO_PREPROCESSING

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def model(self) -> models.YoloNAS:
        """A fresh NNX module holding the variables (for training or surgery)."""
        return nnx.merge(self.graphdef, self.variables)

    def raw(self, images) -> models.YoloNASOutput:
        """Every output of the reference forward: decoded boxes and scores plus the raw head outputs."""
        check_images(images)
        return jit_forward(self.graphdef, self.variables, images)

    def features(self, images) -> tuple[models.YoloNASOutput, dict]:
        """`raw(images)` plus the named intermediate feature maps (NHWC)."""
        check_images(images)
        return jit_features_forward(self.graphdef, self.variables, images)

    def __call__(self, images) -> tuple[jax.Array, jax.Array]:
        out = self.raw(images)
        return out.boxes, out.scores

    def batch_size_for(self, requested: int) -> int:
        """`requested` rounded up to a multiple of this process's device count (the batch is split)."""
        devices = local_data_mesh().devices.size
        return -(-int(requested) // devices) * devices

    def detect_batch(self, images: np.ndarray, settings: NMSSettings = NMSSettings(), dtype=None) -> nms.Detections:
        """(B, H, W, 3) uint8 network inputs, B a multiple of the device count → padded `nms.Detections`
        (numpy) in network-input pixels. dtype: compute dtype (default float32); conf and iou are traced."""
        mesh = local_data_mesh()
        compute_dtype = jnp.dtype(dtype or jnp.float32)
        variables = placed_variables(self, mesh, compute_dtype)
        batch = jax.device_put(np.asarray(images), NamedSharding(mesh, PartitionSpec("data")))
        detections = jit_detect(self.graphdef, variables, batch, np.float32(settings.conf),
                                nms.iou_compare_threshold(settings.iou), **settings.static(),
                                compute_dtype=compute_dtype)
        return jax.device_get(detections)

    def fuse(self, form: str = "full"):
        """This model (same class) with its QARepVGG blocks fused to `form` ("partial" or "full")."""
        return type(self)(fusion.fuse(self.model, form), self.class_names, self.preprocessing)

    def num_parameters(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(self.model, nnx.Param)))

    def reference_num_parameters(self) -> int:
        """Parameters as super-gradients and Ultralytics count them: in the training form that includes
        the unused 3x3 `rbr_reparam` placeholder (weight and bias) of every QARepVGG block."""
        extra = 0
        if self.form == "training":
            for _, m in nnx.iter_modules(self.model):
                if isinstance(m, models.QARepVGGBlock):
                    extra += m.out_channels * m.in_channels * 9 + m.out_channels
        return self.num_parameters() + extra

    def gflops(self, height: int = 640, width: int | None = None) -> float:
        """Floating-point operations of one forward pass at this size, from XLA's cost analysis
        (multiply and add counted separately, as Ultralytics' GFLOPs figure does)."""
        width = width or height
        spec = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
        cost = jit_forward.lower(self.graphdef, self.variables, spec).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan"))) / 1e9

    def info(self, imgsz: int = 640, verbose: bool = False) -> str:
        """Print and return a summary: layers, parameter counts, GFLOPs at `imgsz`."""
        modules = list(nnx.iter_modules(self.model))
        blocks = sum(isinstance(m, models.QARepVGGBlock) for _, m in modules)
        convs = sum(isinstance(m, (nnx.Conv, models.ConvTranspose2x2)) for _, m in modules)
        lines = [
            f"{self.config.name} ({self.form} form): {convs} conv layers, {blocks} QARepVGG blocks, "
            f"{self.num_classes} classes",
            f"parameters: {self.num_parameters():,} used"
            + (f", {self.reference_num_parameters():,} as super-gradients counts them" if self.form == "training" else ""),
            f"GFLOPs at {imgsz}x{imgsz}: {self.gflops(imgsz):.1f}",
        ]
        if verbose:
            for path, variable in nnx.to_flat_state(self.variables):
                lines.append(f"  {'.'.join(map(str, path)):<70} {tuple(variable.get_value().shape)}")
        text = "\n".join(lines)
        print(text)
        return text
