"""The user-facing model object: variables + a jitted pure forward function.

`Detector(images)` runs `forward(graphdef, variables, images)` under `jax.jit`, which compiles once
per input shape and dtype. Input checks happen outside the jitted core, so a bad input gets a clear
message instead of an XLA shape error.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nasjax import fusion, models

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


class Detector:
    """A YOLO-NAS model ready to run: `boxes, scores = detector(images)`.

    images: (B, H, W, 3) float RGB in [0, 1], H and W multiples of 32.
    boxes: (B, N, 4) xyxy in input pixels; scores: (B, N, num_classes) after sigmoid.
    """

    def __init__(self, model: models.YoloNAS, class_names: Sequence[str] | None = None):
        model.eval()
        self.config = model.config
        self.form = model.form
        self.graphdef, self.variables = nnx.split(model)
        self.class_names = list(class_names) if class_names is not None else None

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

    def predict(self, source, **options):
        """Detect objects in images (paths, folders, globs, PIL images, uint8 RGB arrays, or lists of
        them): a list of `nasjax.results.Results`. Options and defaults: `nasjax.predict.predict`."""
        from nasjax.predict import predict

        return predict(self, source, **options)

    def val(self, data, **options):
        """Validate on a dataset: COCO mAP (pycocotools) and Ultralytics-style P / R, as a metrics dict
        (map50_95, map50, precision, recall, per_class, speed, ...); prints Ultralytics' table.

        data: an Ultralytics data YAML, a shipped name ("coco8", "coco128", "coco"), a dataset folder, a
        COCO JSON annotation file (images=its image folder), or "tfds:coco/2017". Options and defaults:
        `nasjax.validate.validate` (conf 0.001, iou 0.7, max_det 300, imgsz 640, batch_size 8,
        reference_mode=False, verbose=False, save_json=None, save_predictions=None, ...)."""
        from nasjax.validate import validate

        return validate(self, data, **options)

    def train(self, data, **options):
        """Fine-tune from this detector's weights on `data`; the detector must be in the training form
        (`nasjax.load(name_or_path, fuse=False)`). Returns what `nasjax.train.train` returns (the run
        directory, per-epoch history, and `best` / `last` checkpoints for `nasjax.load`). Options and
        defaults: `nasjax.train.train` (epochs 10, batch 16, imgsz 640, lr 2e-4, project "runs/train", ...)."""
        from nasjax.train import train

        return train(data, self, **options)

    def export(self, format: str = "tflite", output=None, **options):
        """Export to a TFLite file ("tflite": float32, half=True float16, int8=True with data=... calibration
        images) or a TensorFlow SavedModel ("saved_model", symbolic batch); returns the path written.
        Options and defaults: `nasjax.export.export` (imgsz 640, batch, nms, int8_tail, ...). Run the
        result with `nasjax.load(path)`, which gives the same interface as this detector."""
        from nasjax.export import export

        return export(self, format, output, **options)

    def fuse(self, form: str = "full") -> "Detector":
        """This detector with its QARepVGG blocks fused to `form` ("partial" or "full")."""
        return Detector(fusion.fuse(self.model, form), self.class_names)

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
