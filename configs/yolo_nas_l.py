"""YOLO-NAS L (super-gradients `yolo_nas_l`): 66.98 M parameters as super-gradients counts them
(44.53 M used in training form, 42.00 M fully fused). Published COCO val2017 mAP@0.5:0.95 at 640: 52.22.

Run:  python -c "import nasjax; m = nasjax.build('yolo_nas_l'); m.info()"
It prints 45 QARepVGG blocks, 41,999,192 fused parameters and the GFLOPs at 640x640.
"""
from nasjax.configs.yolo_nas import NeckStageConfig, StageConfig, YoloNASConfig


def get_config() -> YoloNASConfig:
    return YoloNASConfig(
        name="yolo_nas_l",
        stem_channels=48,
        stages=(
            StageConfig(96, num_blocks=2, hidden_channels=96, concat_intermediates=True),
            StageConfig(192, num_blocks=3, hidden_channels=128, concat_intermediates=True),
            StageConfig(384, num_blocks=5, hidden_channels=256, concat_intermediates=True),
            StageConfig(768, num_blocks=2, hidden_channels=512, concat_intermediates=True),
        ),
        spp_pool_sizes=(5, 9, 13),
        neck1=NeckStageConfig(192, num_blocks=4, hidden_channels=128),
        neck2=NeckStageConfig(96, num_blocks=4, hidden_channels=128),
        neck3=NeckStageConfig(192, num_blocks=4, hidden_channels=128),
        neck4=NeckStageConfig(384, num_blocks=4, hidden_channels=256),
        head_width_mult=1.0,
    )
