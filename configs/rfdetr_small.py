# Fine-tunes RF-DETR Small (512 px) on a COCO-format folder; everything else as configs/rfdetr_ft.py.
#   python tools/train.py configs/rfdetr_small.py --cfg-options data_root=/path/to/dataset [model.pretrain_weights=rf-detr-small.pth]
_base_ = "./rfdetr_ft.py"
model = dict(size="small")
