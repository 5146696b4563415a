# Fine-tunes RF-DETR Small (512 px) on a COCO-format folder; everything else as configs/detection/rfdetr_nano.py.
#   python tools/train.py configs/detection/rfdetr_small.py --cfg-options data_root=/path/to/dataset [model.pretrained=rf-detr-small.pth]
_base_ = "./rfdetr_nano.py"
model = dict(size="small")
