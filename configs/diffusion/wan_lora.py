# LoRA fine-tuning of a WAN 2.1 text-to-video transformer on captioned videos (.mp4 + .txt), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/wan_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/videos
# model.pretrained is a local diffusers pipeline folder (pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/wan_lora.py --cfg-options model.device=meta model.pretrained=None
model = dict(type="diffusers", preset="wan21-t2v-1.3b", pretrained=None, dtype="bfloat16")
task = dict(
    type="diffusion",
    lora=dict(r=16, alpha=16),  # the family's attention + MLP projections (recipes/train/diffusion/families.py)
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    samples=dict(prompts=["a cat walking on grass"], seeds=[0, 1], steps=30, guidance_scale=5.0),
)
data = dict(train=dict(type="captioned_videos", resolution=(480, 832), num_frames=33, frame_stride=2))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0004, "cross_attn": 0.00015, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="cosine",
    min_depth_factor=0.25,
    default_lr=0.00025,
)  # the LRs of the recipe's WAN 2.1 video-LoRA example
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
