"""YOLO-NAS S (super-gradients `yolo_nas_s`): 19.05 M parameters as super-gradients counts them
(12.88 M used in training form, 12.18 M fully fused). Published COCO val2017 mAP@0.5:0.95 at 640: 47.5.

Run:  python -c "import nasjax; m = nasjax.build('yolo_nas_s'); m.info()"
It prints 37 QARepVGG blocks, 12,175,888 fused parameters and the GFLOPs at 640x640.
"""
from nasjax.configs.yolo_nas import NeckStageConfig, StageConfig, YoloNASConfig


def get_config() -> YoloNASConfig:
    return YoloNASConfig(
        name="yolo_nas_s",
        stem_channels=48,
        stages=(
            StageConfig(96, num_blocks=2, hidden_channels=32, concat_intermediates=False),
            StageConfig(192, num_blocks=3, hidden_channels=64, concat_intermediates=False),
            StageConfig(384, num_blocks=5, hidden_channels=96, concat_intermediates=False),
            StageConfig(768, num_blocks=2, hidden_channels=192, concat_intermediates=False),
        ),
        spp_pool_sizes=(5, 9, 13),
        neck1=NeckStageConfig(192, num_blocks=2, hidden_channels=64),
        neck2=NeckStageConfig(96, num_blocks=2, hidden_channels=48),
        neck3=NeckStageConfig(192, num_blocks=2, hidden_channels=64),
        neck4=NeckStageConfig(384, num_blocks=2, hidden_channels=64),
        head_width_mult=0.5,
    )
