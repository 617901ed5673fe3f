"""`distillm train`: the compact cross-encoder trainer, stage 1 (InfoNCE) and stage 2 (distillation).

    distillm train --stage infonce --run bm25.train.run --qrels train.qrels --queries train.tsv \\
        --corpus data/msmarco-corpus --model google/electra-base-discriminator --out models/stage1
    distillm train --stage distill --data data/dataset --corpus data/msmarco-corpus \\
        --init models/stage1/model --loss ranknet --out models/student

One flag per setting of `pipeline.student.train_settings.TrainConfig`, with its default and help
as declared there; the trainer is `pipeline.student.trainer.train`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields

from pipeline.commands import settings_from
from pipeline.student.train_settings import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train the cross-encoder student (stage 1 InfoNCE, stage 2 distillation)")
    for f in fields(TrainConfig):
        kwargs = dict(f.metadata)
        flag = "--" + f.name.replace("_", "-")
        if f.default is False:
            p.add_argument(flag, action="store_true", help=kwargs["help"])
            continue
        kwargs.setdefault("type", type(f.default) if f.default not in (None, MISSING) else str)
        if f.default not in (None, ""):
            kwargs["help"] += f" (default: {f.default})"
        p.add_argument(flag, default=f.default, **kwargs)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.student.trainer import train

    final = train(settings_from(TrainConfig, args))
    print(json.dumps(final, indent=2))
    return 0
