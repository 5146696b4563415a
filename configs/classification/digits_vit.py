# Built-in default: fine-tunes a small ViT (timm vit_tiny_patch16_224 cut to 6 blocks of width 96, 8x8 input in 2x2
# patches; random init, since nothing is downloaded) on scikit-learn's digits, which ship inside the scikit-learn
# wheel. Layer-wise LR decay (0.75 per block), linear warm-up + cosine, AdamW, light augmentation; about two
# minutes on 2 CPU cores, test top-1 ~90%.
#   python tools/train.py configs/default.py --work-dir work_dirs/default
#   python tools/show_lr.py configs/default.py         # the LR grid and every group's LR over the run
model = dict(
    type="timm", name="vit_tiny_patch16_224",
    img_size=8, patch_size=2, in_chans=1,  # 16 tokens of 2x2 grey pixels
    depth=6, embed_dim=96, num_heads=3,  # 0.7M parameters: quick on a CPU, enough for digits
)  # fmt: skip
task = dict(type="classification", label_smoothing=0.1)
_aug = [dict(type="Affine", translate_px=(-1, 1), rotate=(-10, 10), p=0.7)]  # digits: small shifts/rotations only
data = dict(
    train=dict(type="digits", split="train", pipeline=_aug),  # 1,257 images (70%), stratified
    val=dict(type="digits", split="val"),  # 180 images (10%): per-epoch eval, temperature fitting
    test=dict(type="digits", split="test"),  # 360 images (20%): reported once at the end
)
adapter = "auto"
strategy = dict(type="layer_decay", lr=1e-3, decay=0.75, weight_decay=0.05)
optimizer = dict(type="AdamW", betas=(0.9, 0.999))
schedule = dict(type="cosine", warmup_epochs=3, min_lr_ratio=0.01)  # floors relative to each group's peak
train = dict(
    epochs=60, batch_size=32, seed=0,  # 39 steps per epoch, 2,340 steps
    ckpt_every=500,
    num_threads=1,  # a 0.7M-parameter model gains little from more threads; 1 avoids oversubscribing busy CPUs
)  # fmt: skip
