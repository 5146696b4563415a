"""Print a config's LR grid and plot every group's LR over the whole schedule.

    python tools/show_lr.py configs/default.py [--out-dir DIR] [--csv] [--cfg-options k=v ...]

Builds the config's model with random weights (``model.device='meta'`` works for full-size
models), applies its trainable policy, builds the parameter groups and the schedule, prints the
grid and writes ``lr_schedule.png`` (and ``lr_schedule.csv`` with ``--csv``) to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.param_groups import build_param_groups  # noqa: E402
from recipes.report import format_lr_grid, lr_table, plot_lr, write_csv  # noqa: E402
from recipes.schedules import build_schedule  # noqa: E402
from recipes.train.config import load_config, schedule_steps  # noqa: E402
from recipes.train.errors import cli  # noqa: E402
from recipes.train.registry import MODELS  # noqa: E402


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out-dir", default=None, help="where the PNG/CSV go (default: work_dirs/<config>/show_lr)")
    ap.add_argument("--csv", action="store_true", help="also write every group's LR per step as CSV")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="override the data-derived value")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    cfg = load_config(args.config, args.cfg_options)
    model = MODELS.build(cfg.model)
    if cfg.get("policy"):
        from recipes.policies import apply_policy

        apply_policy(model, cfg.policy)
    groups = build_param_groups(model, cfg.strategy, adapter=cfg.get("adapter", "auto"))
    print(format_lr_grid(groups, model, title=Path(args.config).stem))

    total, spe = schedule_steps(cfg, args.steps_per_epoch)
    from recipes.param_groups import base_lr_of

    sched = build_schedule(cfg.schedule, total_steps=total, steps_per_epoch=spe, lr=base_lr_of(groups))
    out = Path(args.out_dir or Path("work_dirs") / Path(args.config).stem / "show_lr")
    out.mkdir(parents=True, exist_ok=True)
    rows = lr_table(groups, sched, every=max(1, total // 400))
    plot_lr(rows, str(out / "lr_schedule.png"), title=f"{Path(args.config).stem}: {len(groups)} groups, {total} steps")
    print(
        f"schedule {cfg.schedule['type']}: {total} steps ({spe} per epoch); base lr peak {max(r['base_lr'] for r in rows):.4g}"
    )
    print(f"wrote {out / 'lr_schedule.png'}")
    if args.csv:
        write_csv(lr_table(groups, sched), str(out / "lr_schedule.csv"))
        print(f"wrote {out / 'lr_schedule.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
