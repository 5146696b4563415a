# The PEFT comparison's LoRA-only run: ViT-S/16 on CIFAR-100, LoRA r 8 / alpha 16 on qkv, proj, fc1, fc2 of every block, the
# head trains, all else frozen (628,324 trainable parameters, as the comparison's table). LoRA at lr 5e-4, head at 1e-3.
#   python tools/train.py configs/classification/vit_s16_cifar100_lora_only.py \
#       --cfg-options data_root=/data model.pretrained_file=/weights/vit_small_patch16_224.safetensors
_base_ = ["vit_s16_cifar100_full.py"]
policy = dict(type="lora_only", r=8, alpha=16, targets=["qkv", "proj", "fc1", "fc2"], freeze_lora_steps=400)
strategy = dict(type="flat", lr=1e-3, lr_lora=5e-4, lr_norm=1e-3, weight_decay=0.05)
