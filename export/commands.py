"""The exporter's subcommands of `clipedge`: `export` and `demo train`.

The runtime's CLI does not import this package: it finds `register` through the `clipedge.commands` entry point
(pyproject.toml; clipedge.runtime.cli.registry) and calls it with the subparsers. Importing this module costs no
TensorFlow, so `clipedge --help` lists these commands on a runtime-only install too, and running one there says
which extra to install. Every option comes from the settings dataclass it fills (clipedge.export.options).
"""

from __future__ import annotations

import argparse
import os

from clipedge.export.options import add_options, given_options
from clipedge.export.settings import ExportSettings
from clipedge.runtime.cli.registry import CommandParents
from clipedge.runtime.errors import ClipEdgeError

__all__ = ["register", "require_export_extra"]


def require_export_extra(command: str) -> None:
    """Workstation commands need TensorFlow; on a runtime-only install say what to install, not a traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
    except ImportError as err:
        raise ClipEdgeError(
            f"`clipedge {command}` needs TensorFlow and the converters: pip install 'clipedge[export]' "
            "(this install has only the on-device runtime)"
        ) from err


def register(sub: argparse._SubParsersAction, parents: CommandParents) -> None:
    """Add `export` and `demo train` to the `clipedge` command."""
    from clipedge.export.demo.settings import TrainSettings

    p = sub.add_parser("export", parents=[parents.common], help="checkpoint -> bundle (needs the 'export' extra)")
    add_options(p, ExportSettings)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", parents=[parents.verbosity], help="the shipped demo CLIP (needs the 'export' extra)")
    demo_sub = p.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    t = demo_sub.add_parser("train", parents=[parents.common],
                            help="train the demo CLIP from scratch on generated shapes (about 45 min on 2 cores)")
    t.add_argument("--out", required=True, help="checkpoint directory to write (HF format)")
    t.add_argument("--force", action="store_true", help="replace an existing checkpoint in --out")
    add_options(t, TrainSettings)
    t.set_defaults(func=cmd_demo_train)


def cmd_export(args: argparse.Namespace) -> int:
    from clipedge.runtime.cli.commands import emit

    settings = ExportSettings(**given_options(args, ExportSettings))  # bad values fail here, before TensorFlow
    require_export_extra("export")
    from clipedge.export.pipeline.export_bundle import export_bundle

    result = export_bundle(settings, progress=getattr(args, "progress", False))
    emit(args, {"bundle": str(result.bundle), "artifacts": result.rows, "peak_rss_mib": result.peak_rss,
                "skipped_formats": result.skipped_formats},
         f"{result.table()}\nbundle written to {result.bundle}")
    return 0


def cmd_demo_train(args: argparse.Namespace) -> int:
    from clipedge.export.demo.settings import TrainSettings
    from clipedge.runtime.cli.commands import emit

    settings = TrainSettings(**given_options(args, TrainSettings))
    require_export_extra("demo train")
    from clipedge.export.demo.train import train
    from clipedge.export.pipeline.export_bundle import private_tempdir

    command = f"clipedge demo train --out {args.out} --steps {settings.steps} --seed {settings.seed}"
    with private_tempdir():  # autograph's generated sources, as in an export, go when training ends or is stopped
        result = train(args.out, settings, progress=getattr(args, "progress", False), force=args.force, command=command)
    payload = {"checkpoint": str(result.checkpoint), "seconds": result.seconds,
               "loss_last_50": float(sum(result.losses[-50:]) / len(result.losses[-50:])),
               "zero_shot_top1_held_out": result.held_out_accuracy, "zero_shot_top1_eval_set": result.eval_set_accuracy,
               "zero_shot_top1_drawn_set": result.drawn_set_accuracy}

    def pct(value: float | None) -> str:
        return "not measured" if value is None else f"{100 * value:.1f}%"

    emit(args, payload, f"demo CLIP written to {result.checkpoint} in {result.seconds['total']:.0f} s; zero-shot "
                        f"top-1 {pct(result.held_out_accuracy)} on held-out generated images, "
                        f"{pct(result.eval_set_accuracy)} on the shipped evaluation set, "
                        f"{pct(result.drawn_set_accuracy)} on the second renderer's drawings")
    return 0
