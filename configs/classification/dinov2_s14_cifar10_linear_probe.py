# DINOv2 ViT-S/14 on CIFAR-10, linear probe: only the new head trains (lr 1e-2); otherwise as dinov2_s14_cifar10.py.
#   python tools/train.py configs/classification/dinov2_s14_cifar10_linear_probe.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained=/weights/dinov2_small
_base_ = ["dinov2_s14_cifar10.py"]
policy = dict(type="linear_probe")
strategy = dict(type="flat", lr=1e-2, weight_decay=0.05)
