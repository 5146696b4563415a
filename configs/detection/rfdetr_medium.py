# Fine-tunes RF-DETR Medium (576 px) on a COCO-format folder; everything else as configs/detection/rfdetr_nano.py.
#   python tools/train.py configs/detection/rfdetr_medium.py --cfg-options data_root=/path/to/dataset [model.pretrained=rf-detr-medium.pth]
_base_ = "./rfdetr_nano.py"
model = dict(size="medium")
