# ImageNet EfficientNet-Lite0 on CIFAR-10, every layer trains with stage-wise LR decay from timm's group_matcher
# (0.7 per stage from the head's 3e-3: stage 7 2.1e-3, stage 1 2.5e-4, stem 1.7e-4); else as effnet_lite0_cifar10.py.
#   python tools/train.py configs/classification/effnet_lite0_cifar10_layer_decay.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained=/weights/efficientnet-lite0-57934424.pth
_base_ = ["effnet_lite0_cifar10.py"]
strategy = dict(type="layer_decay", lr=3e-3, decay=0.7, weight_decay=1e-5)
