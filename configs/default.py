# Built-in default: ViT-Tiny (timm, random init) with layer-wise LR decay and warm-up + cosine.
# Show its LR grid:  python tools/show_lr.py configs/default.py
model = dict(type="timm", name="vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)
adapter = "auto"
recipe = dict(type="layer_decay", lr=1e-3, decay=0.75, weight_decay=0.05)
schedule = dict(type="cosine", warmup_epochs=1, min_lr_ratio=0.01)
train = dict(epochs=10, batch_size=64, steps_per_epoch=22)  # 1,437 digits / 64 per batch
