# Fine-tunes RF-DETR Base (560 px, the original DINOv2-windowed-small release) on a COCO-format folder; everything else as configs/detection/rfdetr_nano.py.
#   python tools/train.py configs/detection/rfdetr_base.py --cfg-options data_root=/path/to/dataset [model.pretrained=rf-detr-base.pth]
_base_ = "./rfdetr_nano.py"
model = dict(size="base")  # random init builds with positional_encoding_size=40 (37 would fetch DINOv2)
