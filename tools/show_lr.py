"""Print a config's LR grid and plot every group's LR over the whole schedule.

    python tools/show_lr.py configs/default.py [--out-dir DIR] [--csv] [--cfg-options k=v ...]

Builds exactly the model ``tools/train.py`` trains, by the same path (``recipes.train.build.prepare_run``:
the task's model with the class count from the training data, the trainable policy, freezing),
with its initial weights (``model.device='meta'`` works for full-size models); prints the grid and
writes ``lr_schedule.png`` (and ``lr_schedule.csv`` with ``--csv``) to ``--out-dir``. Without the
data at hand, ``--steps-per-epoch N`` (or ``train.max_steps``) lets it use the config's class count.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.report import format_lr_grid, lr_table, plot_lr, write_csv  # noqa: E402
from recipes.train.build import RunPlan, prepare_run  # noqa: E402
from recipes.train.config import load_config, world_size  # noqa: E402
from recipes.train.errors import cli  # noqa: E402


def plan_for(cfg, steps_per_epoch: int | None) -> RunPlan:  # noqa: ANN001 - an mmengine Config
    """The run as tools/train.py builds it; without the data, the config's own class count (said so)."""
    if not cfg.get("data"):  # a config for the library alone (e.g. a diffusion LoRA's groups): no data to read
        return prepare_run(cfg, world=world_size(), steps_per_epoch=steps_per_epoch, data=False)
    try:
        return prepare_run(cfg, world=world_size(), steps_per_epoch=steps_per_epoch)
    except (FileNotFoundError, KeyError) as e:
        if "data" not in str(e) or not (steps_per_epoch or cfg.get("train", {}).get("max_steps")):
            raise
        print(f"note: the data cannot be read ({e}); using the config's own class count")
        return prepare_run(cfg, world=world_size(), steps_per_epoch=steps_per_epoch, data=False)


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
    plan = plan_for(cfg, args.steps_per_epoch)
    groups, total, spe = plan.groups, plan.total_steps, plan.steps_per_epoch
    print(format_lr_grid(groups, plan.model, title=Path(args.config).stem))
    for line in plan.freeze.describe():
        print(f"[freeze] {line}")
    out = Path(args.out_dir or Path("work_dirs") / Path(args.config).stem / "show_lr")
    out.mkdir(parents=True, exist_ok=True)
    rows = lr_table(groups, plan.schedule, every=max(1, total // 400))
    plot_lr(rows, str(out / "lr_schedule.png"), title=f"{Path(args.config).stem}: {len(groups)} groups, {total} steps")
    print(f"schedule {cfg.schedule['type']}: {total} steps ({spe} per epoch); "
          f"base lr peak {max(r['base_lr'] for r in rows):.4g}")  # fmt: skip
    print(f"wrote {out / 'lr_schedule.png'}")
    if args.csv:
        write_csv(lr_table(groups, plan.schedule), str(out / "lr_schedule.csv"))
        print(f"wrote {out / 'lr_schedule.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
