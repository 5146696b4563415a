"""``train.sdpa_backends``: the attention kernels every forward, backward and evaluation may use."""

from __future__ import annotations

import pytest
import torch

from recipes.train.config import sdpa_context, train_options
from recipes.train.engine import Trainer
from recipes.train.errors import BadInput
from tests.test_engine import tiny_cfg


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("math", r"must be a non-empty list of \['flash', 'efficient', 'cudnn', 'math'\].*got 'math'"),
        ([], "must be a non-empty list"),
        (["flsh"], r"unknown attention kernel 'flsh' \(did you mean 'flash'\?\)"),
        (["math", 3], "unknown attention kernel 3"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_option(value, message):
    with pytest.raises(BadInput, match=rf"train.sdpa_backends.*{message}|{message}"):
        train_options(tiny_cfg(sdpa_backends=value))


class _Probe(torch.autograd.Function):
    """Records whether the flash kernel is allowed when the forward and the backward run."""

    seen: list[tuple[str, bool]] = []

    @staticmethod
    def forward(ctx, x):
        _Probe.seen.append(("forward", torch.backends.cuda.flash_sdp_enabled()))
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _Probe.seen.append(("backward", torch.backends.cuda.flash_sdp_enabled()))
        return grad


def _train(tmp_path, name, **train):
    trainer = Trainer(tiny_cfg(max_steps=2, **train), tmp_path / name).setup()
    trainer.model.register_forward_hook(lambda module, args, out: _Probe.apply(out))
    _Probe.seen = []
    trainer.train()
    return trainer, list(_Probe.seen)


def test_the_kernels_are_restricted_in_the_forward_and_the_backward(tmp_path):
    _, default = _train(tmp_path, "default")
    _, math_only = _train(tmp_path, "math", sdpa_backends=["math"])
    assert {kind for kind, _ in math_only} == {"forward", "backward"}
    assert all(allowed for _, allowed in default)  # torch's choice: flash allowed
    assert not any(allowed for _, allowed in math_only)  # backward too (recomputation under checkpointing runs there)
    assert torch.backends.cuda.flash_sdp_enabled()  # restored after the run


def test_a_kernel_that_cannot_run_here_stops_the_run(tmp_path):
    """The timm ViT calls F.scaled_dot_product_attention: with only the CUDA 'efficient' kernel allowed, a CPU run has
    no kernel left, so the option reaches the model's attention."""
    with pytest.raises(RuntimeError, match="No viable backend|No available kernel"):
        _train(tmp_path, "efficient", sdpa_backends=["efficient"])
    with sdpa_context(["math"]):
        assert not torch.backends.cuda.flash_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled()
