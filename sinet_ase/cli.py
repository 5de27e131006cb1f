"""Console commands: ``sinet-train`` (train a potential from a YAML config)."""

import argparse
import sys

from .errors import ConfigError


def train_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="sinet-train",
        description="Train a SINet energy+force potential from a YAML config.",
        epilog="Overrides: dotted keys after the config, e.g. training.epochs=5 run_dir=runs/x",
    )
    parser.add_argument("config", help="YAML config (see training/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument("--resume", action="store_true",
                        help="continue from run_dir/checkpoint.pt exactly where it stopped")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from .train import load_config, train

    try:
        config = load_config(args.config, args.overrides)
        summary = train(config, resume=args.resume, quiet=args.quiet)
    except (ConfigError, FileNotFoundError) as err:
        print(f"sinet-train: error: {err}", file=sys.stderr)
        return 2
    best = summary.get("best", {})
    print(f"done: {summary.get('epochs_done')} epochs; best epoch {best.get('epoch')} "
          f"(valid F MAE {best.get('valid_f_mae_mev_a', float('nan')):.1f} meV/Å); "
          f"model: {config.run_dir}/best_model.pt")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
