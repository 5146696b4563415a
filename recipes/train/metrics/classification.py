"""Classification metrics from logits: top-k, NLL, ECE (15 bins) and post-hoc temperature scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width confidence bins (Guo et al. 2017): sum |acc - conf| x bin weight."""
    probs = logits.float().softmax(dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.float().mean() * (correct[inside].mean() - conf[inside].mean()).abs()
    return float(ece)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of ``logits / T`` (LBFGS on log T), from T = 1."""
    logits, labels = logits.detach().float(), labels.detach()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """top1, top5 (when there are more than 5 classes), nll and ece, as percentages for accuracies.

    >>> m = classification_metrics(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
    >>> m["top1"], round(m["nll"], 4)
    (50.0, 1.0635)
    """
    logits = logits.float()
    out = {"top1": 100.0 * topk_accuracy(logits, labels, 1)}
    if logits.shape[1] > 5:
        out["top5"] = 100.0 * topk_accuracy(logits, labels, 5)
    out["nll"] = float(F.cross_entropy(logits, labels))
    out["ece"] = expected_calibration_error(logits, labels)
    return {f"{prefix}{k}": v for k, v in out.items()}
