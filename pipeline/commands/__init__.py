"""One module per `distillm` command, as DVC's `dvc/commands/`: each declares its flags
(`register(subparsers)`) and turns them into one call of its stage's library function (`run(args)`),
which knows nothing of argparse. A flag's default is the stage's own, written once where the stage
defines it: in its settings dataclass (`TeacherJob`, `TrainConfig`, `ExportSettings`, ...) or in
its library function's signature (`defaults`). `pipeline.cli` builds the parser from `COMMANDS`.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from dataclasses import fields
from types import SimpleNamespace
from typing import Any, TypeVar

Settings = TypeVar("Settings")


def defaults(function: Callable) -> SimpleNamespace:
    """The keyword defaults of a library function, by parameter name: its flags' defaults."""
    parameters = inspect.signature(function).parameters.values()
    return SimpleNamespace(**{p.name: p.default for p in parameters if p.default is not p.empty})


def settings_from(cls: type[Settings], args: argparse.Namespace, **given: Any) -> Settings:
    """A stage's settings dataclass from the flags of the same names; `given`: the fields whose
    flags say it otherwise (`--no-progress` for `progress`, ...)."""
    return cls(**{f.name: given[f.name] if f.name in given else getattr(args, f.name) for f in fields(cls)})
