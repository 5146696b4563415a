# ImageNet EfficientNet-Lite0 on CIFAR-10, norm-only: every BatchNorm (affine and running statistics) and the head
# train at lr 3e-3, all convolutions frozen; else as effnet_lite0_cifar10.py.
#   python tools/train.py configs/classification/effnet_lite0_cifar10_norm_only.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained=/weights/efficientnet-lite0-57934424.pth
_base_ = ["effnet_lite0_cifar10.py"]
policy = dict(type="norm_only")
strategy = dict(type="flat", lr=3e-3, weight_decay=1e-5)
