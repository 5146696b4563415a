# Fine-tunes all of ViT-S/16 (timm vit_small_patch16_224) on CIFAR-100 at 224 px: the baseline of the PEFT
# comparison's recipe (batch 128, AdamW, weight decay 0.05, 15 epochs, cosine to an absolute floor of 1e-5).
# Its trainable-policy variants inherit from it: vit_s16_cifar100_{lora_only,norm_only,deep_lora}.py.
# Needs CIFAR-100 in torchvision's layout (<data_root>/cifar-100-python) and local ImageNet weights:
#   python tools/train.py configs/classification/vit_s16_cifar100_full.py \
#       --cfg-options data_root=/data model.pretrained_file=/weights/vit_small_patch16_224.safetensors
#   torchrun --nproc_per_node=8 tools/train.py configs/classification/vit_s16_cifar100_full.py --cfg-options ...  # same recipe, DDP
data_root = None  # required: the folder holding cifar-100-python/
model = dict(type="timm", name="vit_small_patch16_224", pretrained_file=None)  # None: random init (says so in the grid)
task = dict(type="classification")
_norm = dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # timm's augreg ViT-S/16 preprocessing
_train = [dict(type="Resize", height=224, width=224), dict(type="HorizontalFlip", p=0.5), _norm]
_test = [dict(type="Resize", height=224, width=224), _norm]
data = dict(
    train=dict(type="cifar100", split="train", pipeline=_train),  # 50,000 images
    val=dict(type="cifar100", split="test", pipeline=_test),  # the comparison reports test top-1 / ECE every epoch
)
adapter = "auto"
strategy = dict(type="flat", lr=1e-3, weight_decay=0.05)
optimizer = dict(type="AdamW")
# the comparison's schedule: cosine over all 15 epochs to eta_min 1e-5, an absolute floor (the same for every group)
schedule = dict(type="cosine", warmup_steps=0, min_lr=1e-5, floor_mode="absolute")
train = dict(epochs=15, batch_size=128, num_workers=4, seed=0, ckpt_every=1000, amp="bf16")
