#!/usr/bin/env bash
# Fine-tune YOLO-NAS S on COCO128 from deterministic random (scratch) weights, export the best
# checkpoint to float32 and INT8 TFLite, and measure all three on the same 128 images.
#
#   NASJAX_DATASETS_DIR=../shared/assets bash examples/train_coco128.sh [RUN_DIR] [IMGSZ] [EPOCHS]
#
# COCO128's train and val splits are the same 128 images, so the mAP says how well the model fits them,
# not how it generalises. On a 2-core CPU (no GPU): IMGSZ 256, 30 epochs, ~30 min; on a GPU use 640
# and more epochs. The INT8 model is calibrated on the same images.
set -euo pipefail
RUN_DIR=${1:-runs/coco128}
IMGSZ=${2:-256}
EPOCHS=${3:-30}
NASJAX=${NASJAX:-nasjax}

$NASJAX train data=coco128 model=yolo_nas_s epochs="$EPOCHS" batch=8 imgsz="$IMGSZ" \
    lr=1e-3 warmup_steps=50 augment=light project="$RUN_DIR" name=s$IMGSZ exist_ok=true workers=2
BEST="$RUN_DIR/s$IMGSZ/best"
$NASJAX export model="$BEST" format=tflite imgsz="$IMGSZ" output="$RUN_DIR/s$IMGSZ.tflite"
$NASJAX export model="$BEST" format=tflite int8=true data=coco128 calib_images=128 \
    imgsz="$IMGSZ" output="$RUN_DIR/s${IMGSZ}_int8.tflite"
for MODEL in "$BEST" "$RUN_DIR/s$IMGSZ.tflite" "$RUN_DIR/s${IMGSZ}_int8.tflite"; do
    echo "== $MODEL"
    $NASJAX val model="$MODEL" data=coco128 imgsz="$IMGSZ" batch=8 json="$MODEL.metrics.json" \
        project="$RUN_DIR" name=val exist_ok=true
done
