# Flux.1 (MMDiT, flow matching, guidance input on [dev]): the family base. The pipeline, LoRA, data, default LRs (`strategy`), schedule
# and run length of every configs/diffusion/*.py with _base_ = "./_base_/flux.py"; one with LRs of its own
# sets strategy=dict(_delete_=True, ...).
#   python tools/train.py configs/diffusion/flux_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/data
model = dict(type="diffusers", preset="flux1-dev", pretrained=None, dtype="bfloat16")
# what trains (the one switch of every task): LoRA on the family's attention + MLP projections
# (recipes/train/diffusion/families.py); kind='lokr' / 'loha' for LyCORIS, type='full' for every weight
policy = dict(type="lora_only", r=16, alpha=16)
task = dict(
    type="diffusion",
    # Flux.1 [dev]'s distilled-guidance input while training: 1.0, as kohya / SimpleTuner / ai-toolkit train LoRAs
    # (3.5 is diffusers' example; docs/diffusion.md); [schnell] has no such input: remove the key there
    guidance_scale=1.0,
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    samples=dict(prompts=["a photo of sks dog"], seeds=[0, 1], steps=28, guidance_scale=3.5),
)
data = dict(train=dict(type="captioned_images", resolution=1024, flip_p=0.5))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0004, "cross_attn": 0.00015, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.4,
    peak_position=0.5,
    default_lr=0.00025,
)  # the shape of the recipe's Flux examples (its Flux.2 style LoRA, LRs scaled by 0.8)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
