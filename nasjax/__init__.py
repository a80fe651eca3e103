"""nasjax: YOLO-NAS in JAX/Flax.

    import nasjax
    model = nasjax.load("yolo_nas_s")                   # or a weight file, converted dir, exported model
    results = model.predict("bus.jpg")                  # Results; model.val / export / train
    boxes, scores = model(images)                       # (B, H, W, 3) RGB in [0, 1]

The pipeline is visible in the sub-packages: `nasjax.weights` (registry) and `nasjax.converters`
(torch-free file readers) → `nasjax.loading` (download, convert, checkpoints) → `nasjax.model`
(the Flax network, fusion, the jitted core) → `nasjax.predict`, `nasjax.validate`, `nasjax.export`,
`nasjax.train`, with `nasjax.data` (images, datasets, augmentation) beside them. `nasjax.detector`
is the façade that ties them together; the `nasjax` command is `nasjax.cli`.

Attributes are imported on first use, so `import nasjax.converters` (or the configs) does not pull in
jax; modules that moved keep working under their old names with a DeprecationWarning (`_compat`).
"""
from __future__ import annotations

from nasjax import _compat
from nasjax.utils.lazy import lazy_attributes

__version__ = "0.1.0"

_PUBLIC = {
    "Detector": "nasjax.detector",
    "load": "nasjax.detector",
    "build": "nasjax.detector",
    "from_state_dict": "nasjax.detector",
    "check_images": "nasjax.model.core",
    "forward": "nasjax.model.core",
    "Network": "nasjax.model.core",
    "FORMS": "nasjax.model.yolo_nas",
    "YoloNAS": "nasjax.model.yolo_nas",
    "YoloNASOutput": "nasjax.model.yolo_nas",
    "VARIANTS": "nasjax.configs",
    "get_config": "nasjax.configs",
    "Results": "nasjax.predict.results",
    "NMSSettings": "nasjax.model.nms",
}

_compat.install()


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _PUBLIC)


__all__ = sorted(_PUBLIC)
