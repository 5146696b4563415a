# Fine-tunes RF-DETR Nano (384 px, the same as rfdetr_ft.py) on a COCO-format folder; everything else as configs/rfdetr_ft.py.
#   python tools/train.py configs/rfdetr_nano.py --cfg-options data_root=/path/to/dataset [model.pretrain_weights=rf-detr-nano.pth]
_base_ = "./rfdetr_ft.py"
model = dict(size="nano")
