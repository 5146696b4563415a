# LTX-2 (audio-video DiT, Gemma-3 encoder + text connectors, video and audio VAEs): the family base, trained on the video
# stream (ltx-trainer's video-only `text_to_video`: no audio-to-video attention, docs/diffusion.md). The pipeline, LoRA,
# data, default LRs (`strategy`), schedule and run length of every configs/diffusion/*.py with _base_ = "./_base_/ltx2.py";
# one with LRs of its own sets strategy=dict(_delete_=True, ...).
#   python tools/train.py configs/diffusion/ltx2_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
model = dict(type="diffusers", preset="ltx2", pretrained=None, dtype="bfloat16")
# what trains (the one switch of every task): LoRA on the video stream's attention + MLP projections
# (recipes/train/diffusion/family_ltx.py); kind='lokr' / 'loha' for LyCORIS, type='full' for every weight
policy = dict(type="lora_only", r=16, alpha=16)
task = dict(
    type="diffusion",
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    samples=dict(prompts=["a cat walking on grass"], seeds=[0, 1], steps=30, guidance_scale=3.0),  # the call's defaults
)
# 1 + 8k frames (the VAE's temporal ratio 8), every frame: the denoiser is told the pipeline's 24 fps
data = dict(train=dict(type="captioned_videos", resolution=(512, 768), num_frames=49))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0004, "cross_attn": 0.00015, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="cosine",
    min_depth_factor=0.25,
    default_lr=0.00025,
)  # ltx_video.py's (wan_lora.py's) video-LoRA ratios: a starting point chosen here, not measured
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
