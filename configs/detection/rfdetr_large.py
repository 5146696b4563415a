# Fine-tunes RF-DETR Large (704 px) on a COCO-format folder; everything else as configs/detection/rfdetr_nano.py.
#   python tools/train.py configs/detection/rfdetr_large.py --cfg-options data_root=/path/to/dataset [model.pretrained=rf-detr-large.pth]
_base_ = "./rfdetr_nano.py"
model = dict(size="large")
