# Full-size single-object tracker for one GPU: all 12 blocks of the DINOv2 ViT-S/14 inflated into a VideoMAE
# backbone, 112 px template / 224 px search (64 + 256 tokens, OSTrack-256-like geometry at patch 14), 20 epochs of
# 8,000 pairs, bf16 autocast, EMA. Same data (a GOT-10k root: train/, val/, test/) as the CPU config.
#   python tools/train.py configs/tracking/videomae_dinov2_gpu.py \
#       --cfg-options data_root=/data/GOT-10k model.init=/tmp/dinov2_small
#   torchrun --nproc_per_node=N tools/train.py configs/tracking/videomae_dinov2_gpu.py ...   # data-parallel
_base_ = "./videomae_dinov2_cpu.py"
model = dict(num_hidden_layers=12)
task = dict(template_size=112, search_size=224)
data = dict(train=dict(samples_per_epoch=8000, max_gap=100), val=dict(max_sequences=None))  # all 180 val sequences
# as the CPU config: the head at 4e-4 (component_scale head=10 is inherited), the backbone at a tenth of it with
# depth decay 0.9 over 12 blocks (block 12 at 0.09x the head's LR, the embeddings at 0.9**13 / 10 = 0.025x)
strategy = dict(lr=4e-5, decay=0.9)
schedule = dict(warmup_steps=250)
train = dict(
    epochs=20, batch_size=32, eval_batch_size=8, amp="bf16", ema=dict(decay=0.999),
    ckpt_every=250, keep_ckpts=3, num_threads=None, num_workers=8, log_every=50,
)  # fmt: skip
