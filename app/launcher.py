"""The ``alignstudio`` command.

No argument (or ``studio``) opens the window; any other subcommand belongs to
the headless CLI, which is handed the arguments before Qt is imported, so that
``alignstudio train`` works on a server without a display or Qt libraries.
"""

from __future__ import annotations

import argparse
import sys

STUDIO_COMMAND = "studio"


def studio_parser() -> argparse.ArgumentParser:
    from backend.methods import method_keys

    parser = argparse.ArgumentParser(
        prog="alignstudio",
        description="Open the AlignStudio window. Other commands (train, data, runs, settings) run headless; "
                    "see `alignstudio train --help`.",
    )
    parser.add_argument("--data", metavar="FILE", help="dataset file or folder to load at start-up")
    parser.add_argument("--model", metavar="MODEL", help="base model: a Hugging Face id, a folder or a .gguf file")
    parser.add_argument("--method", choices=method_keys(), help="training method to select")
    parser.add_argument("--config", metavar="YAML", help="settings to load: a run's config.yaml, or your own")
    parser.add_argument("--demo", action="store_true",
                        help="open with the demo run: preference tuning of the embedded Gemma 3 270M on the demo data")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == STUDIO_COMMAND:
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):
        from backend.cli.main import main as cli_main

        return cli_main(argv)
    args = studio_parser().parse_args(argv)
    config = args.config
    if args.demo and not config:
        from backend.cli.main import DEMO_CONFIG

        config = str(DEMO_CONFIG)
    from app.studio_app import run_studio

    return run_studio(data=args.data, model=args.model, method=args.method, config=config)


if __name__ == "__main__":
    sys.exit(main())
