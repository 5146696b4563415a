"""The Lightning bridge in a real ``lightning.Trainer`` run on CPU (skipped without the extra)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

L = pytest.importorskip("lightning")
from lightning.pytorch.callbacks import LearningRateMonitor  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from recipes import build_schedule  # noqa: E402
from recipes.integrations.lightning import BaseLRLogger, configure_optimizers  # noqa: E402

STRATEGY = dict(type="layer_decay", lr=1e-3, decay=0.6, weight_decay=0.05)
SCHEDULE = dict(type="cosine", warmup_steps=2, min_lr_ratio=0.05)
STEPS = 6


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, num_heads=2,
                                     depth=3, num_classes=3)  # fmt: skip
        self.seen: list[list[float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append([g["lr"] for g in self.optimizers().optimizer.param_groups])  # the LRs this step uses
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return configure_optimizers(self, STRATEGY, SCHEDULE, model=self.net)


def test_lightning_run(tmp_path):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 16, 16), torch.arange(12) % 3)
    module = Classifier()
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", logger=CSVLogger(str(tmp_path)), log_every_n_steps=1,
                        callbacks=[LearningRateMonitor("step"), BaseLRLogger()], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    groups = trainer.optimizers[0].param_groups
    schedule = build_schedule(SCHEDULE, total_steps=STEPS, lr=STRATEGY["lr"])  # estimated_stepping_batches == 6
    assert len(module.seen) == STEPS
    for step, lrs in enumerate(module.seen):
        for g, lr in zip(groups, lrs, strict=True):
            assert lr == pytest.approx(schedule.group_lr(step, g["lr_scale"]), rel=1e-9, abs=1e-15), (step, g["name"])
    assert len({g["lr_scale"] for g in groups}) == 5  # embed, 3 blocks, head
    assert trainer.callback_metrics["lr-base"] == pytest.approx(schedule.value(STEPS - 1), rel=1e-6)
    logged = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert f"lr-AdamW/{groups[0]['name']}" in logged and "lr-base" in logged  # Lightning names groups by ours


def test_configure_optimizers_options():
    net = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, num_heads=2, depth=3)
    out = configure_optimizers(net, STRATEGY)
    assert set(out) == {"optimizer"}
    out = configure_optimizers(net, STRATEGY, SCHEDULE, total_steps=10, optimizer=torch.optim.SGD, momentum=0.9)
    assert isinstance(out["optimizer"], torch.optim.SGD) and out["lr_scheduler"]["interval"] == "step"
    with pytest.raises(ValueError, match="give total_steps"):
        configure_optimizers(net, STRATEGY, SCHEDULE)
    with pytest.raises(TypeError, match="from the strategy"):
        configure_optimizers(net, STRATEGY, lr=1e-2)


class NetAsAttribute(L.LightningModule):
    """The usual layout: the network held as ``self.net`` and configure_optimizers(self, ...) without model=."""

    def __init__(self) -> None:
        super().__init__()
        self.net = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, num_heads=2,
                                     depth=3, num_classes=3)  # fmt: skip
        self.temperature = torch.nn.Parameter(torch.ones(()))  # a parameter of the module itself


def test_net_as_an_attribute_is_grouped_by_its_adapter_without_model():
    module = NetAsAttribute()
    with_model = configure_optimizers(module, STRATEGY, model=module.net)["optimizer"].param_groups
    without = configure_optimizers(module, STRATEGY)["optimizer"].param_groups
    lr_of = lambda groups: {n: g["lr"] for g in groups for n in g["param_names"]}  # noqa: E731
    assert {"net." + n: lr for n, lr in lr_of(with_model).items()} == {
        n: lr for n, lr in lr_of(without).items() if n != "temperature"
    }
    assert lr_of(without)["temperature"] == STRATEGY["lr"]  # the rest of the module: the head's LR
    two = NetAsAttribute()
    two.other = timm.create_model("resnet10t", num_classes=2)
    with pytest.raises(ValueError, match=r"the known networks are \['net', 'other'\].*model=self.<attribute>"):
        configure_optimizers(two, STRATEGY)


def test_weight_decay_not_given_follows_the_optimizers_default():
    net = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, num_heads=2, depth=3)
    strategy = dict(type="layer_decay", lr=1e-3, decay=0.6)
    groups = configure_optimizers(net, strategy)["optimizer"].param_groups
    assert {g["weight_decay"] for g in groups} == {0.0, 0.01}  # torch AdamW's default on the decayed groups
    groups = configure_optimizers(net, strategy, optimizer=torch.optim.SGD)["optimizer"].param_groups
    assert {g["weight_decay"] for g in groups} == {0.0}
