# DINOv2 ViT-S/14 on CIFAR-10, every layer trains with layer-wise LR decay (0.65 per block from the head's 1e-3 down:
# block 12 6.5e-4, block 6 4.9e-5, block 1 5.7e-6, stem 3.7e-6); otherwise as dinov2_s14_cifar10.py.
#   python tools/train.py configs/classification/dinov2_s14_cifar10_layer_decay.py \
#       --cfg-options data_root=/data/cifar10 model.pretrained=/weights/dinov2_small
_base_ = ["dinov2_s14_cifar10.py"]
strategy = dict(type="layer_decay", lr=1e-3, decay=0.65, weight_decay=0.05)
