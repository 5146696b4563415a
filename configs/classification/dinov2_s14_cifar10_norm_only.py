# DINOv2 ViT-S/14 on CIFAR-10, norm-only (of the PEFT comparison): every LayerNorm and the head train, lr 1e-3 for both.
#   python tools/train.py configs/classification/dinov2_s14_cifar10_norm_only.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained_file=/weights/dinov2_small
_base_ = ["dinov2_s14_cifar10.py"]
policy = dict(type="norm_only")
strategy = dict(type="flat", lr=1e-3, lr_norm=1e-3, weight_decay=0.05)
