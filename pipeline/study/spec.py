"""The study's spec (study/params.yaml), each fold's training inputs (`prepare`) and the grid of runs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.contract.qrels import load_qrels
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)

MEASURE = "nDCG@10"
LOSSES = ("ranknet", "adr-mse", "infonce")
FIRST_STAGE = "first-stage"  # the name of the first stage's own rows


@dataclass(frozen=True)
class Fold:
    name: str  # the held-out query set
    train: str  # the query set the students of this fold learn from
    qrels: Path
    first_stage: Path  # the run the students re-rank (and the baseline)


@dataclass(frozen=True)
class Teacher:
    name: str
    about: str
    runs: dict[str, Path]  # query set -> the teacher's run (what students learn from)
    draws: dict[str, list[Path]] = field(default_factory=dict)  # further runs of the same teacher
    known_only: bool = False  # train on the passages the corpus store has text for (others dropped, counted)


@dataclass(frozen=True)
class StudySpec:
    path: Path
    seeds: list[int]
    folds: dict[str, Fold]
    teachers: dict[str, Teacher]
    control: str
    loss: str  # the primary loss


def load_spec(path: str | Path) -> StudySpec:
    """The study's spec, checked: >= 2 seeds (a spread needs them), folds with qrels and a first
    stage, the control among the teachers."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(path, None, f"cannot read the study spec: {e}") from None
    missing = [k for k in ("seeds", "folds", "teachers", "control", "loss") if k not in (raw or {})]
    if missing:
        raise InputError(path, None, f"the study spec lacks {', '.join(missing)}")
    seeds = [int(s) for s in raw["seeds"]]
    if len(set(seeds)) < 2:
        raise InputError(
            path, None, f"seeds {seeds}: a study needs at least 2 seeds to show a spread (3 or more to trust it)"
        )
    folds = {
        name: Fold(name, str(f["train"]), Path(f["qrels"]), Path(f["first_stage"])) for name, f in raw["folds"].items()
    }
    teachers = {
        name: Teacher(
            name,
            str(t.get("about", "")),
            {k: Path(v) for k, v in t["runs"].items()},
            {k: [Path(p) for p in v] for k, v in (t.get("draws") or {}).items()},
            bool(t.get("known_only", False)),
        )
        for name, t in raw["teachers"].items()
    }
    for fold in folds.values():
        if fold.train not in folds:
            raise InputError(path, None, f"fold {fold.name} trains on {fold.train!r}, which is not a fold")
        absent = [t.name for t in teachers.values() if fold.train not in t.runs]
        if absent:
            raise InputError(path, None, f"teachers {absent} have no run of {fold.train!r} (fold {fold.name})")
    if raw["control"] not in teachers:
        raise InputError(path, None, f"the control {raw['control']!r} is not among the teachers {sorted(teachers)}")
    return StudySpec(path, seeds, folds, teachers, str(raw["control"]), str(raw["loss"]))


def prepare(spec: StudySpec, corpus: str | Path, out: str | Path) -> dict:
    """Each fold's training inputs under OUT/<fold>/ (see the module's docstring); returns their stats."""
    from pipeline.contract.qrels import write_qrels
    from pipeline.ingestion import ingest_run

    out = Path(out)
    stats: dict[str, dict] = {}
    for fold in spec.folds.values():
        folder = out / fold.name
        folder.mkdir(parents=True, exist_ok=True)
        train = spec.folds[fold.train]
        stats[fold.name] = {
            "train": fold.train,
            "first_stage": ingest_run(train.first_stage, corpus, folder / "train.run"),
        }
        qrels = load_qrels(train.qrels)
        write_qrels(qrels, folder / "train.qrels")
        for teacher in spec.teachers.values():
            run = folder / f"teacher-{teacher.name}.run"
            stats[fold.name][teacher.name] = ingest_run(
                teacher.runs[fold.train], corpus, run, known_only=teacher.known_only
            )
            kept = stats[fold.name][teacher.name]["kept_fraction"]
            log.info(
                "%s: %s on %s -> %s (%.1f%% of its passages have text)",
                fold.name,
                teacher.name,
                fold.train,
                run,
                100 * kept,
            )
    (out / "prepare.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def split_config(config: str, spec: StudySpec) -> tuple[str, str]:
    """(teacher, loss) of a configuration folder named `<teacher>-<loss>`."""
    for loss in LOSSES:
        teacher = config.removesuffix(f"-{loss}")
        if teacher != config and teacher in spec.teachers:
            return teacher, loss
    raise ValueError(f"{config!r} is not <teacher>-<loss> with a teacher of the spec and a loss of {LOSSES}")


def collect_runs(runs_dir: str | Path, spec: StudySpec) -> dict[str, dict[tuple[str, int], Path]]:
    """config -> {(fold, seed): run}; every configuration must have every fold and seed of the spec."""
    runs_dir = Path(runs_dir)
    configs = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    if not configs:
        raise InputError(runs_dir, None, "no configurations (folders <teacher>-<loss>) in the runs folder")
    grid = {}
    order = {name: i for i, name in enumerate(spec.teachers)}
    for folder in configs:
        try:
            split_config(folder.name, spec)
        except ValueError as e:
            raise InputError(folder, None, str(e)) from None
    for folder in sorted(configs, key=lambda f: _config_order(f.name, spec, order)):
        points = {(fold, seed): folder / f"{fold}-{seed}.run" for fold in spec.folds for seed in spec.seeds}
        absent = [f"{fold}-{seed}.run" for (fold, seed), p in points.items() if not p.exists()]
        if absent:
            raise InputError(folder, None, f"missing grid points {', '.join(absent)} (run the study to the end first)")
        grid[folder.name] = points
    return grid


def _config_order(config: str, spec: StudySpec, order: dict[str, int]) -> tuple[int, int]:
    """The spec's teacher order, the primary loss before the others."""
    teacher, loss = split_config(config, spec)
    return order[teacher], loss != spec.loss
