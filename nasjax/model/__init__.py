"""The model: the Flax YOLO-NAS network (`yolo_nas.py`, `conv.py`, `box_decoding.py`), QARepVGG fusion
(`fusion.py`), on-device NMS (`nms.py`), the jitted core and batch interface (`core.py`), the mapping
of super-gradients tensor names onto the variables (`state_dict.py`), and building networks from
tensors or deterministic weights (`build.py`, `deterministic_weights.py`)."""
