"""Data: images in, datasets and training batches out. One job per module, in pipeline order:

    images        preprocessing.py   read an image; resize and pad it for the network; map boxes back
    bounds        limits.py          what nasjax reads at most from user files (image pixels, YAML aliases, ...)
    datasets      base.py            Sample, Dataset, SampleListDataset, DatasetError, DatasetNotFoundError
                  config.py          data YAMLs (Ultralytics' rules), class names, the datasets directory
                  download.py        fetch and safely extract a YAML's missing zips (check_det_dataset)
                  yolo.py            YOLO-format images and label files → Samples
                  coco_json.py       COCO JSON annotation files → Samples (coco.py: COCO's category ids)
                  tfds.py            TFDS coco/2017 → Samples, streamed
                  load.py            load_dataset (validation), load_split (training)
    training      augment.py         Augmentation (the recipe's knobs) and the pure numpy / Pillow transforms
                  loader.py          prepare one image; Loader: shuffled, augmented, padded batches
                  targets.py         LossTargets: the padded boxes a batch carries to the loss

    from nasjax.data import load_dataset, load_split, Augmentation, Loader

The names below are imported on first use, so that the image code (which `nasjax.model` imports) does
not pull in the dataset readers and downloads. The old modules `nasjax.datasets` and
`nasjax.input_pipeline` are this package (`nasjax._compat`).
"""
from __future__ import annotations

from nasjax.utils.lazy import lazy_attributes

_EXPORTS = {
    "nasjax.data.preprocessing": ("IMAGE_EXTENSIONS", "ImageLoadError", "Transform", "load_image", "make_transform",
                                  "preprocess", "to_unit_float"),
    "nasjax.data.base": ("Dataset", "DatasetError", "DatasetNotFoundError", "Sample", "SampleListDataset",
                         "image_key", "read_json_file"),
    "nasjax.data.config": ("DATASETS_DIR_ENV", "DataConfig", "datasets_dir", "find_dataset_yaml", "load_data_config",
                           "parse_names", "shipped_configs_dir", "shipped_dataset_names"),
    "nasjax.data.download": ("check_det_dataset", "download_dataset"),
    "nasjax.data.yolo": ("YoloDataset", "image_size", "label_path", "list_images", "parse_label_file", "walk_files"),
    "nasjax.data.coco": ("COCO80_TO_91", "category_ids_for", "is_coco_names"),
    "nasjax.data.coco_json": ("CocoJsonDataset",),
    "nasjax.data.tfds": ("TFDS_PREFIX", "TfdsCocoDataset"),
    "nasjax.data.load": ("load_dataset", "load_split"),
    "nasjax.data.augment": ("HSV_GAINS", "PAD_VALUE", "Augmentation", "affine_matrix", "affine_transform",
                            "apply_affine_to_boxes", "channel_swap", "draw_affine_matrix", "filter_box_candidates",
                            "fit_to_size", "horizontal_flip", "hsv_jitter", "mixup", "mixup_blend", "mosaic",
                            "mosaic_canvas", "random_affine", "warp_affine"),
    "nasjax.data.loader": ("MAX_BOXES_CAP", "Batch", "Loader", "prepare"),
    "nasjax.data.targets": ("LossTargets",),
}
_PUBLIC = {name: module for module, names in _EXPORTS.items() for name in names}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _PUBLIC)


__all__ = sorted(_PUBLIC)
