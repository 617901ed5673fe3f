"""The README's `distillm` commands against the real CLI: documented commands and flags must exist.

Commands in the README's code blocks are parsed whole by `distillm`'s own parser (they must
work as written); elided ones (`distillm rerank ... --shard 0/4`), flags named in a line's
comment (`# --k 100 --k1 0.9`) and inline `distillm ...` spans in the prose are checked flag
by flag against the subcommand they name. Every `bench/` script the README names must exist.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from pipeline.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
COMMENT = re.compile(r"\s#\s")  # a shell comment after the command (no command here has " # " in it)
ENV_PREFIX = re.compile(r"^(?:[A-Z_]+=\S+\s+)+")


def _code_block_commands() -> list[tuple[int, str, str]]:
    """(line number, command, its comment) for each `distillm` command in a README code block,
    continuation lines (ending in a backslash) joined."""
    commands: list[tuple[int, str, str]] = []
    in_block, parts, comments, first = False, [], [], 0
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        match = COMMENT.search(line)
        code, comment = (line[: match.start()], line[match.end() :]) if match else (line, "")
        if not parts:
            first = number
        parts.append(code.strip().removesuffix("\\").strip())
        comments.append(comment)
        if code.rstrip().endswith("\\"):
            continue
        command = ENV_PREFIX.sub("", " ".join(p for p in parts if p))
        if command.startswith("distillm "):
            commands.append((first, command, " ".join(comments)))
        parts, comments = [], []
    return commands


def _inline_commands() -> list[tuple[int, str]]:
    """(line number, text) of each inline code span outside code blocks that starts with `distillm `."""
    spans: list[tuple[int, str]] = []
    in_block = False
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
        elif not in_block:
            spans += [(number, span) for span in re.findall(r"`(distillm [^`]+)`", line)]
    return spans


def _subcommand(tokens: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the (nested) subcommand the tokens after `distillm` name, and the rest."""
    parser = build_parser()
    while tokens:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or tokens[0] not in actions[0].choices:
            break
        parser, tokens = actions[0].choices[tokens[0]], tokens[1:]
    return parser, tokens


def _unknown_flags(parser: argparse.ArgumentParser, tokens: list[str]) -> list[str]:
    known = {option for action in parser._actions for option in action.option_strings}
    return [t.split("=")[0] for t in tokens if t.startswith("-") and t.split("=")[0] not in known]


BLOCK_COMMANDS = _code_block_commands()


def test_the_readme_shows_commands_for_every_stage() -> None:
    """Guards the extraction itself: if the README's format changes, these tests must not pass vacuously."""
    shown = {tuple(shlex.split(command)[1:2]) for _, command, _ in BLOCK_COMMANDS}
    expected = ["ingest", "index", "retrieve", "rerank", "export", "validate", "publish", "train", "evaluate"]
    assert {(name,) for name in expected} <= shown
    assert len(_inline_commands()) >= 5


@pytest.mark.parametrize(
    ("line", "command", "comment"), BLOCK_COMMANDS, ids=[f"README:{n}" for n, _, _ in BLOCK_COMMANDS]
)
def test_readme_code_block_commands_parse(line: int, command: str, comment: str) -> None:
    tokens = shlex.split(command)[1:]
    parser, rest = _subcommand(tokens)
    elided = "..." in tokens
    if not elided:
        try:
            build_parser().parse_args(tokens)
        except SystemExit as e:  # argparse's error exit (its message went to stderr)
            pytest.fail(f"README.md:{line}: `{command}` does not parse (exit {e.code})")
    comment_flags = [t for t in comment.split() if t.startswith("--")]
    unknown = _unknown_flags(parser, (rest if elided else []) + comment_flags)
    assert not unknown, f"README.md:{line}: `{parser.prog}` has no {unknown}"


def test_readme_inline_commands_name_real_subcommands_and_flags() -> None:
    problems = []
    for line, span in _inline_commands():
        tokens = [t for t in shlex.split(span)[1:] if t != "..."]
        parser, rest = _subcommand(tokens)
        if parser.prog == "distillm" and rest and not rest[0].startswith("-") and "/" not in rest[0]:
            problems.append(f"README.md:{line}: `{span}`: no subcommand {rest[0]!r}")
        problems += [
            f"README.md:{line}: `{span}`: `{parser.prog}` has no {flag}" for flag in _unknown_flags(parser, rest)
        ]
    assert not problems, "\n".join(problems)


def test_bench_scripts_the_readme_names_exist_with_the_flags_it_shows() -> None:
    """Scripts by path; flags of `python bench/X.py --flag` spans against the script's own
    add_argument declarations (read from its source: bench scripts import heavy libraries)."""
    text = README.read_text()
    named = set(re.findall(r"\bbench/[\w/]+\.(?:py|sh)\b", text))
    assert named, "the README names no bench script"
    missing = sorted(path for path in named if not (README.parent / path).is_file())
    assert not missing, missing
    spans = re.findall(r"`python (bench/[\w/]+\.py)([^`]*)`", text)
    unknown = [
        f"{script}: {flag}"
        for script, rest in spans
        for flag in re.findall(r"--[\w-]+", rest)
        if f'"{flag}"' not in (README.parent / script).read_text()
    ]
    assert len(spans) >= 5 and not unknown, unknown
