# The PEFT comparison's norm-only run: ViT-S/16 on CIFAR-100, only the LayerNorms (every block's and the final one) and the
# head train (57,700 trainable parameters, as the comparison's table); lr 1e-3 for both.
#   python tools/train.py configs/classification/vit_s16_cifar100_norm_only.py \
#       --cfg-options data_root=/data model.pretrained_file=/weights/vit_small_patch16_224.safetensors
_base_ = ["vit_s16_cifar100_full.py"]
policy = dict(type="norm_only")
strategy = dict(type="flat", lr=1e-3, lr_norm=1e-3, weight_decay=0.05)
