# WAN 2.1 text-to-video (flow matching): the family base. The pipeline, LoRA, data, default LRs (`strategy`), schedule
# and run length of every configs/diffusion/*.py with _base_ = "./_base_/wan.py"; one with LRs of its own
# sets strategy=dict(_delete_=True, ...).
#   python tools/train.py configs/diffusion/wan_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
model = dict(type="diffusers", preset="wan21-t2v-1.3b", pretrained=None, dtype="bfloat16")
# what trains (the one switch of every task): LoRA on the family's attention + MLP projections
# (recipes/train/diffusion/families.py); kind='lokr' / 'loha' for LyCORIS, type='full' for every weight
policy = dict(type="lora_only", r=16, alpha=16)
task = dict(
    type="diffusion",
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
)  # the recipe's WAN 2.1 video-LoRA LRs
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
