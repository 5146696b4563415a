"""Step time of the engine (tools/train.py's Trainer) against a minimal hand-written loop, same run.

Same model config, data, optimizer (AdamW on the same layer-decay groups) and batch; the engine
step includes everything it does each step (schedule hand-off, loss check, CSV + TensorBoard
logging, progress bar). Rounds alternate engine / hand loop to share the machine's noise; the
figure is the ratio of median per-step times.

    python bench/step_time.py [--config configs/default.py] [--steps 30] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.timing import engine_round, hand_loop_round  # noqa: E402
from recipes.param_groups import build_param_groups  # noqa: E402
from recipes.train.config import load_config  # noqa: E402
from recipes.train.engine import Trainer  # noqa: E402


def hand_round(model: torch.nn.Module, opt: torch.optim.Optimizer, dataset, batch: int, steps: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
    it = iter(loader)

    def loss() -> torch.Tensor:
        x, y = next(it)
        return F.cross_entropy(model(x), y)

    return hand_loop_round(loss, opt, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/default.py")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cfg = load_config(args.config, ["train.progress=False"])
    with tempfile.TemporaryDirectory() as wd:
        t = Trainer(cfg, wd).setup()
        model = t.task.build_model()
        opt = torch.optim.AdamW(
            build_param_groups(model, cfg.strategy), **{k: v for k, v in cfg.optimizer.items() if k != "type"}
        )
        bs = t.opts["batch_size"]
        eng, hand = [], []
        engine_round(t, 3), hand_round(model, opt, t.train_set, bs, 3)  # warm-up
        for _ in range(args.rounds):
            eng.append(engine_round(t, args.steps))
            hand.append(hand_round(model, opt, t.train_set, bs, args.steps))
        t.log.close()
    e, h = statistics.median(eng), statistics.median(hand)
    print(f"{args.config}: batch {bs}, {args.rounds} x {args.steps} steps, threads {torch.get_num_threads()}")
    print(f"engine {1e3 * e:.2f} ms/step  hand loop {1e3 * h:.2f} ms/step  ratio {e / h:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
