"""The transformers bridge in real ``Trainer`` runs (tiny ViT config, no hub)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification  # noqa: E402

from recipes.integrations.transformers import (  # noqa: E402
    GroupLRCallback,
    RecipesTrainer,
    create_optimizer_and_scheduler,
)

LR, STEPS = 1e-3, 6
STRATEGY = dict(type="layer_decay", lr=LR, decay=0.5, weight_decay=0.05)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                    intermediate_size=64, num_labels=3)  # fmt: skip
    return ViTForImageClassification(cfg)


class Images(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"pixel_values": torch.randn(3, 16, 16, generator=g), "labels": i % 3}


def reference_lrs(kind, **kw) -> list[float]:
    """The LR each of STEPS steps uses under the same transformers schedule, one group at the base LR."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    s = transformers.get_scheduler(kind, opt, num_training_steps=STEPS, **kw)
    out = []
    for _ in range(STEPS):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return out


def run(tmp_path, model, opt, sched, attach=True) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=2,
                             logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=Images(), optimizers=(opt, sched))
    if attach:
        GroupLRCallback.attach(trainer)
    trainer.train()
    return trainer


def test_trainer_run_logs_base_and_group_lrs(tmp_path):
    model = tiny_vit()
    opt, sched = create_optimizer_and_scheduler(model, STRATEGY, num_training_steps=STEPS, scheduler="cosine_with_min_lr",
                                                num_warmup_steps=2, scheduler_kwargs={"min_lr": 1e-4})  # fmt: skip
    trainer = run(tmp_path, model, opt, sched)
    ref = reference_lrs("cosine_with_min_lr", num_warmup_steps=2, scheduler_specific_kwargs={"min_lr": 1e-4})
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["step"] for r in logs] == list(range(1, STEPS + 1))
    groups = {g["name"]: g["lr_scale"] for g in opt.param_groups}
    assert len(groups) > 4 and min(groups.values()) == pytest.approx(0.5**4)  # 3 blocks: embeddings at decay ** (N + 1)
    for row in logs:
        base = ref[row["step"] - 1]
        assert row["learning_rate"] == pytest.approx(base, rel=1e-9)  # not the embedding group's
        for name, scale in groups.items():
            assert row[f"lr/{name}"] == pytest.approx(base * scale, rel=1e-9), name


def test_without_the_callback_trainer_logs_the_first_group(tmp_path):
    model = tiny_vit()
    opt, sched = create_optimizer_and_scheduler(model, STRATEGY, num_training_steps=STEPS, scheduler="linear",
                                                num_warmup_steps=2)  # fmt: skip
    trainer = run(tmp_path, model, opt, sched, attach=False)
    row = [r for r in trainer.state.log_history if "loss" in r][1]
    assert opt.param_groups[0]["name"].startswith("embed")
    assert row["learning_rate"] == pytest.approx(
        reference_lrs("linear", num_warmup_steps=2)[1] * opt.param_groups[0]["lr_scale"]
    )


def test_recipes_schedule_through_trainer(tmp_path):
    model = tiny_vit()
    schedule = dict(type="cosine", warmup_steps=2, min_lr_ratio=0.1)
    opt, sched = create_optimizer_and_scheduler(model, STRATEGY, num_training_steps=STEPS, scheduler=schedule)
    trainer = run(tmp_path, model, opt, sched)
    from recipes import build_schedule

    ours = build_schedule(schedule, total_steps=STEPS, lr=LR)
    for row in (r for r in trainer.state.log_history if "loss" in r):
        assert row["learning_rate"] == pytest.approx(ours.value(row["step"] - 1), rel=1e-9)
    with pytest.raises(ValueError, match="num_warmup_steps"):
        create_optimizer_and_scheduler(
            model, STRATEGY, num_training_steps=STEPS, scheduler=schedule, num_warmup_steps=1
        )
    with pytest.raises(TypeError, match="from the strategy"):
        create_optimizer_and_scheduler(model, STRATEGY, num_training_steps=STEPS, lr=1e-4)


def test_recipes_trainer_takes_lr_and_schedule_from_training_arguments(tmp_path):
    model = tiny_vit()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=2, logging_steps=1,
                             learning_rate=LR, weight_decay=0.05, lr_scheduler_type="cosine", warmup_steps=2,
                             optim="adamw_torch", report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)  # fmt: skip
    trainer = RecipesTrainer(
        model=model, args=args, train_dataset=Images(), strategy=dict(type="layer_decay", decay=0.5)
    )
    trainer.train()
    ref = reference_lrs("cosine", num_warmup_steps=2)
    groups = trainer.optimizer.param_groups
    assert {round(g["lr_scale"], 6) for g in groups} == {0.0625, 0.125, 0.25, 0.5, 1.0}
    assert all(g["weight_decay"] in (0.0, 0.05) for g in groups) and any(g["weight_decay"] for g in groups)
    for row in (r for r in trainer.state.log_history if "loss" in r):
        assert row["learning_rate"] == pytest.approx(ref[row["step"] - 1], rel=1e-9)
        assert row["lr/embed.decay"] == pytest.approx(ref[row["step"] - 1] * 0.0625, rel=1e-9)
    with pytest.raises(ValueError, match="TrainingArguments.learning_rate"):
        RecipesTrainer(model=model, args=args, strategy=dict(type="layer_decay", decay=0.5, lr=1e-4))
