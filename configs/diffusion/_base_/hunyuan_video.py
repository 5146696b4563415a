# HunyuanVideo (dual- then single-stream video DiT, Llama + CLIP encoders, guidance-distilled): the family base. The
# pipeline, LoRA, data, default LRs (`strategy`), schedule and run length of every configs/diffusion/*.py with
# _base_ = "./_base_/hunyuan_video.py"; one with LRs of its own sets strategy=dict(_delete_=True, ...).
#   python tools/train.py configs/diffusion/hunyuan_video_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
model = dict(type="diffusers", preset="hunyuan-video", pretrained=None, dtype="bfloat16")
task = dict(
    type="diffusion",
    lora=dict(r=16, alpha=16),  # the family's attention + MLP projections (recipes/train/diffusion/families_more.py)
    caption_dropout=0.05,
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    # the guidance input while training: 1.0 (task.guidance_scale default, as musubi-tuner); samples at the call's 6.0
    samples=dict(prompts=["a cat walking on grass"], seeds=[0, 1], steps=50, guidance_scale=6.0),
)
data = dict(train=dict(type="captioned_videos", resolution=(544, 960), num_frames=33))  # 1 + 4k frames
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.00035, "ffn": 0.0002, "norm": 3e-05},
    depth_strategy="linear",
    min_depth_factor=0.25,
    default_lr=0.0002,
)  # the recipe's HunyuanVideo LoRA LRs (configs/diffusion/hunyuan_video_lora.py)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
