"""YOLO-NAS M (super-gradients `yolo_nas_m`): 51.18 M parameters as super-gradients counts them
(33.86 M used in training form, 31.91 M fully fused). Published COCO val2017 mAP@0.5:0.95 at 640: 51.55.

Run:  python -c "import nasjax; m = nasjax.build('yolo_nas_m'); m.info()"
It prints 39 QARepVGG blocks, 31,906,578 fused parameters and the GFLOPs at 640x640.
"""
from nasjax.configs.yolo_nas import NeckStageConfig, StageConfig, YoloNASConfig


def get_config() -> YoloNASConfig:
    return YoloNASConfig(
        name="yolo_nas_m",
        stem_channels=48,
        stages=(
            StageConfig(96, num_blocks=2, hidden_channels=64, concat_intermediates=True),
            StageConfig(192, num_blocks=3, hidden_channels=128, concat_intermediates=True),
            StageConfig(384, num_blocks=5, hidden_channels=256, concat_intermediates=True),
            StageConfig(768, num_blocks=2, hidden_channels=384, concat_intermediates=False),
        ),
        spp_pool_sizes=(5, 9, 13),
        neck1=NeckStageConfig(192, num_blocks=2, hidden_channels=192),
        neck2=NeckStageConfig(96, num_blocks=3, hidden_channels=64),
        neck3=NeckStageConfig(192, num_blocks=2, hidden_channels=192),
        neck4=NeckStageConfig(384, num_blocks=3, hidden_channels=256),
        head_width_mult=0.75,
    )
