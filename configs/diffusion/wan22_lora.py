# LoRA fine-tuning of one expert of a Wan 2.2 text-to-video pipeline (T2V-A14B: two 14B experts split at
# boundary_ratio 0.875) on captioned videos (.mp4 + .txt), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/wan22_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/videos
# task.expert names the expert: "transformer" (high noise: timesteps >= 875, layout and motion) or
# "transformer_2" (low noise: detail); each run trains one, on its own timesteps only, as musubi-tuner does.
# The LoRA lands in <work_dir>/lora/: pipeline.load_lora_weights(dir) for "transformer",
# load_lora_weights(dir, load_into_transformer_2=True) for "transformer_2". Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/wan22_lora.py --cfg-options model.device=meta model.pretrained=None
model = dict(type="diffusers", preset="wan22-t2v-a14b", pretrained=None, dtype="bfloat16")
task = dict(
    type="diffusion",
    expert="transformer",
    lora=dict(r=16, alpha=16),  # the family's attention + MLP projections (recipes/train/diffusion/families.py)
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    samples=dict(prompts=["a cat walking on grass"], seeds=[0, 1], steps=30, guidance_scale=4.0),
)
data = dict(train=dict(type="captioned_videos", resolution=(480, 832), num_frames=33, frame_stride=2))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0002, "cross_attn": 0.0001, "ffn": 0.00015, "norm": 2e-05},
    depth_strategy="cosine",
    min_depth_factor=0.25,
    default_lr=0.00015,
)  # wan_lora.py's grid halved for a 14B expert: a starting point chosen here, not a measured optimum
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
