# Fine-tunes RF-DETR Nano on your COCO-format folder (everything is in configs/detection/rfdetr_nano.py).
#   python tools/train.py configs/rfdetr_ft.py --cfg-options data_root=/path/to/dataset
_base_ = "./detection/rfdetr_nano.py"
