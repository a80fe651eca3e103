"""nasjax: YOLO-NAS in JAX/Flax.

    import nasjax
    detector = nasjax.from_state_dict(state_dict)       # super-gradients tensor names → Flax
    boxes, scores = detector(images)                     # (B, H, W, 3) RGB in [0, 1]
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from flax import nnx

from configs import VARIANTS, get_config
from nasjax import fusion
from nasjax.detector import Detector, check_images, forward
from nasjax.loading import load
from nasjax.models import FORMS, YoloNAS, YoloNASOutput

__version__ = "0.1.0"


def from_state_dict(
    state_dict: Mapping[str, Any],
    variant: str | None = None,
    *,
    form: str | None = "full",
    class_names: Sequence[str] | None = None,
) -> Detector:
    """A `Detector` from a super-gradients state dict (tensor name → array), in any QARepVGG form.

    The variant and class count are inferred from the tensor shapes unless `variant` is given. The
    model is fused to `form` ("full" by default, the fastest for inference; None keeps the form the
    state dict is in). Raises `converters.StateDictError` naming every missing, unexpected or
    wrongly shaped tensor.
    """
    from converters.state_dict import state_dict_to_variables

    _, source_form, graphdef, variables = state_dict_to_variables(state_dict, variant)
    model = nnx.merge(graphdef, variables)
    if form is not None and form != source_form:
        model = fusion.fuse(model, form)
    return Detector(model, class_names)


def build(
    variant: str = "yolo_nas_s",
    *,
    form: str = "full",
    num_classes: int = 80,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    init: str = "test",
) -> Detector:
    """A `Detector` with deterministic random weights: the training-form tensors that
    `nasjax.deterministic_weights` makes for `seed`, fused to `form`. The same seed gives the same
    weights on every machine. init "test" (default) randomises BatchNorm statistics and every other
    parameter (what the parity tests use); "scratch" is PyTorch's default initialisation with the
    reference head's class prior (what training from scratch starts from)."""
    from converters.state_dict import reference_key_shapes
    from nasjax.deterministic_weights import deterministic_state_dict

    shapes = reference_key_shapes(variant, "training", num_classes)
    return from_state_dict(deterministic_state_dict(shapes, seed, init), variant, form=form, class_names=class_names)


__all__ = [
    "Detector",
    "FORMS",
    "VARIANTS",
    "YoloNAS",
    "YoloNASOutput",
    "build",
    "check_images",
    "forward",
    "from_state_dict",
    "get_config",
    "load",
]
