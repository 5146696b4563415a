# Fine-tunes a one-stream VideoMAE tracker (transformers VideoMAEModel, single object) whose backbone is the real
# DINOv2 ViT-S/14 inflated into the tubelet embedding, on an official GOT-10k root: trains on train/, picks best.pt
# on the first 30 sequences of val/, and at the end tracks test/ into the evaluation server's submission format
# (<work_dir>/submission.zip). LaSOT / TrackingNet roots: see docs/tracking.md (no official val split there).
# CPU-sized: the first 8 of DINOv2's 12 blocks, 70 px template / 140 px search (25 + 100 tokens), 6 epochs of
# 1,024 pairs; resumable (--resume). The shared set (a plain folder): videomae_dinov2_cpu_shared.py.
#   python tools/train.py configs/tracking/videomae_dinov2_cpu.py \
#       --cfg-options data_root=/data/GOT-10k model.pretrained=/tmp/dinov2_small
#   python tools/track.py configs/tracking/videomae_dinov2_cpu.py work_dirs/videomae_dinov2_cpu/best.pt --eval \
#       --split test --cfg-options data_root=/data/GOT-10k          # best.pt's submission (val: --split val)
data_root = None  # required: a GOT-10k root (train/ val/ test/, each with list.txt)
model = dict(
    type="videomae_tracker",
    pretrained=None,  # a DINOv2 folder (inflated), a VideoMAE folder or a VideoMAEv2 .pth; None = random
    hidden_size=384, num_attention_heads=6, intermediate_size=1536, patch_size=14,  # ViT-S/14, as DINOv2-small
    layer_norm_eps=1e-6, hidden_act="gelu",
    num_hidden_layers=8,  # DINOv2's first 8 blocks: two thirds of the cost on a CPU
    tubelet_size=2, num_frames=2,
)  # fmt: skip
task = dict(
    type="tracking",
    template_size=70, search_size=140,  # multiples of the patch (14): 5x5 and 10x10 tokens
    template_context=2.0, search_context=4.0,  # crop side / sqrt(w*h) (OSTrack's factors)
    loss_weights=dict(focal=1.0, l1=5.0, giou=2.0),  # OSTrack's weights
    window_penalty=0.49,
    # chosen on the validation split of the shared set (docs/tracking.md, "What each change does"): L1 / GIoU on the
    # box read at the score peak (the box the tracker uses, as OSTrack) and the box size damped between frames
    box_loss_at="peak", size_lr=0.1,
)  # fmt: skip
data = dict(
    train=dict(type="tracking_pairs", split="train", samples_per_epoch=1024, max_gap=50,
               scale_jitter=0.25, shift_jitter=3.0, flip=0.5, photometric=0.8),
    # all 180 val sequences take ~15 min a pass on 2 CPU cores; the first 30 (~3,500 frames) pick best.pt
    val=dict(type="tracking_sequences", split="val", max_sequences=30),
    test=dict(type="tracking_sequences", split="test"),  # boxes withheld: tracked once into submission.zip
)  # fmt: skip
adapter = "videomae"
# the head at 4e-4, the backbone at a tenth of it (OSTrack's backbone multiplier) with a mild depth decay 0.9:
# block 8 at 0.09x the head's LR, the embeddings at 0.039x. With 10 training sequences the DINOv2 features must
# move little: layer decay 0.75 at lr 4e-4 (block 8 at 0.75x) tracked the train split at AO 0.78 and the eval
# split at 0.23 (docs/tracking.md).
strategy = dict(type="layer_decay", lr=4e-5, decay=0.9, weight_decay=0.05, component_scale=dict(head=10.0))
optimizer = dict(type="AdamW", betas=(0.9, 0.999))
# the BEiT / VideoMAEv2 hand-off: per-step LR (x each group's lr_scale) and a cosine weight-decay schedule on decayed groups only
schedule = dict(type="cosine", warmup_steps=32, min_lr_ratio=0.05, weight_decay=0.05, weight_decay_end=0.1)
train = dict(
    epochs=6, batch_size=16, eval_batch_size=8,  # 64 steps per epoch; 8 sequences tracked as one batch
    clip_grad=1.0, ckpt_every=16, keep_ckpts=2, num_threads=2, seed=0, log_every=8,
)  # fmt: skip
