"""Train a tumbler potential.

    python train.py                                   # configs/quickstart.yaml: EMT Cu demo, a few CPU minutes
    python train.py --config configs/acac.yaml --set training.lr=0.005 --set device=cuda
    python train.py --config configs/acac.yaml --restart          # resume output_dir/checkpoint.pt exactly
    torchrun --nproc_per_node 4 train.py --config configs/3bpa.yaml  # data parallel

Outputs in output_dir: model.pt (best EMA model; potential.Calculator.from_file), checkpoint.pt, config.yaml
(resolved), metrics.csv, train.log, test_metrics.json. The config reference is potential/training/config.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "quickstart.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a tumbler potential from a YAML config.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config value, YAML-parsed, e.g. --set training.lr=0.005 (repeatable)")
    parser.add_argument("--restart", action="store_true", help="resume from output_dir/checkpoint.pt")
    parser.add_argument("--overwrite", action="store_true", help="start again in an output_dir that holds a run")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)

    import yaml

    from potential.training.config import ConfigError, config_to_dict, load_config
    from potential.training.trainer import TrainingError, run

    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
            return 0
        run(cfg, restart=args.restart, overwrite=args.overwrite)
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    except (TrainingError, FileNotFoundError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
