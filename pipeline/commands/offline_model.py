"""`distillm offline-model KIND`: a model that needs no hub, built from PyPI packages (tests, offline demo).

    distillm offline-model tiny-mistral --out data/models/tiny-mistral
    distillm offline-model minilm --out data/models/minilm
    distillm offline-model minilm-colbert --out data/models/minilm-colbert

The builders are `pipeline.offline_models.BUILDERS`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.offline_models import BUILDERS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("offline-model", help="build or copy a model that needs no hub (tests, offline demo)")
    p.add_argument(
        "kind",
        choices=sorted(BUILDERS),
        help="tiny-mistral: teacher stand-in; minilm: student backbone; minilm-colbert: ColBERT first stage",
    )
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(BUILDERS[args.kind](args.out))
    return 0
