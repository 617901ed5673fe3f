"""The `distillm` commands of the README and of every docs page against the real CLI: documented
commands and flags must exist.

The pages are README.md and every `docs/**/*.md` (the site `make docs` builds). Commands in their
code blocks are parsed whole by `distillm`'s own parser (they must work as written); elided ones
(`distillm rerank ... --shard 0/4`), flags named in a line's comment (`# --k 100 --k1 0.9`) and
inline `distillm ...` spans in the prose are checked flag by flag against the subcommand they
name. Every `bench/` script a page names must exist, with the flags it shows. Every relative link
of the README leads to a file that exists (and to a heading of it, for `page.md#anchor`); the
docs' own links are checked by `mkdocs build --strict`.
"""

from __future__ import annotations

import argparse
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

from pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
COMMENT = re.compile(r"\s#\s")  # a shell comment after the command (no command here has " # " in it)
ENV_PREFIX = re.compile(r"^(?:[A-Z_]+=\S+\s+)+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _prose_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, line) of each line outside the page's code blocks."""
    lines, in_block = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
        elif not in_block:
            lines.append((number, line))
    return lines


def _code_block_commands(page: Path) -> list[tuple[int, str, str]]:
    """(line number, command, its comment) for each `distillm` command in a code block of the page,
    continuation lines (ending in a backslash) joined."""
    commands: list[tuple[int, str, str]] = []
    in_block, parts, comments, first = False, [], [], 0
    for number, line in enumerate(page.read_text().splitlines(), 1):
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


def _inline_commands(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of each inline code span outside code blocks that starts with `distillm `."""
    return [(number, span) for number, line in _prose_lines(page) for span in re.findall(r"`(distillm [^`]+)`", line)]


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


BLOCK_COMMANDS = [(page, *command) for page in PAGES for command in _code_block_commands(page)]


def test_the_pages_show_commands_for_every_stage() -> None:
    """Guards the extraction itself: if the pages' format changes, these tests must not pass vacuously."""
    assert DOCS / "index.md" in PAGES and len(PAGES) >= 10, [_name(p) for p in PAGES]
    shown = {tuple(shlex.split(command)[1:2]) for _, _, command, _ in BLOCK_COMMANDS}
    expected = ["ingest", "index", "retrieve", "rerank", "export", "validate", "publish", "train", "evaluate"]
    assert {(name,) for name in expected} <= shown
    assert sum(len(_inline_commands(page)) for page in PAGES) >= 20
    assert _inline_commands(README), "the README shows no inline `distillm` command"


@pytest.mark.parametrize(
    ("page", "line", "command", "comment"),
    BLOCK_COMMANDS,
    ids=[f"{_name(page)}:{line}" for page, line, _, _ in BLOCK_COMMANDS],
)
def test_code_block_commands_parse(page: Path, line: int, command: str, comment: str) -> None:
    tokens = shlex.split(command)[1:]
    parser, rest = _subcommand(tokens)
    elided = "..." in tokens
    if not elided:
        try:
            build_parser().parse_args(tokens)
        except SystemExit as e:  # argparse's error exit (its message went to stderr)
            pytest.fail(f"{_name(page)}:{line}: `{command}` does not parse (exit {e.code})")
    comment_flags = [t for t in comment.split() if t.startswith("--")]
    unknown = _unknown_flags(parser, (rest if elided else []) + comment_flags)
    assert not unknown, f"{_name(page)}:{line}: `{parser.prog}` has no {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_inline_commands_name_real_subcommands_and_flags(page: Path) -> None:
    problems = []
    for line, span in _inline_commands(page):
        tokens = [t for t in shlex.split(span)[1:] if t != "..."]
        parser, rest = _subcommand(tokens)
        if parser.prog == "distillm" and rest and not rest[0].startswith("-") and "/" not in rest[0]:
            problems.append(f"{_name(page)}:{line}: `{span}`: no subcommand {rest[0]!r}")
        problems += [
            f"{_name(page)}:{line}: `{span}`: `{parser.prog}` has no {flag}" for flag in _unknown_flags(parser, rest)
        ]
    assert not problems, "\n".join(problems)


def _bench_scripts(text: str) -> set[str]:
    return set(re.findall(r"\bbench/[\w/]+\.(?:py|sh)\b", text))


def _bench_spans(text: str) -> list[tuple[str, str]]:
    """(script, the rest of the span) of each `python bench/X.py ...` span, which may run over lines."""
    return re.findall(r"`python (bench/[\w/]+\.py)([^`]*)`", text)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_bench_scripts_a_page_names_exist_with_the_flags_it_shows(page: Path) -> None:
    """Scripts by path; flags of `python bench/X.py --flag` spans against the script's own
    add_argument declarations (read from its source: bench scripts import heavy libraries)."""
    text = page.read_text()
    missing = sorted(path for path in _bench_scripts(text) if not (ROOT / path).is_file())
    assert not missing, f"{_name(page)} names {missing}"
    unknown = [
        f"{script}: {flag}"
        for script, rest in _bench_spans(text)
        for flag in re.findall(r"--[\w-]+", rest)
        if f'"{flag}"' not in (ROOT / script).read_text()
    ]
    assert not unknown, f"{_name(page)}: {unknown}"


def test_the_pages_name_bench_scripts_and_their_flags() -> None:
    """Guards the extraction of the test above."""
    texts = [page.read_text() for page in PAGES]
    assert len(set().union(*map(_bench_scripts, texts))) >= 10
    assert sum(len(_bench_spans(text)) for text in texts) >= 5


def _slug(heading: str) -> str:
    """A heading's anchor, as MkDocs' `toc` extension makes it (GitHub's agrees for plain headings)."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for _, line in _prose_lines(page) if re.match(r"#{1,6} ", line)}


def _relative_links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of each Markdown link outside code blocks that is not a URL."""
    return [
        (number, target)
        for number, line in _prose_lines(page)
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_readme_links_lead_to_files_that_exist() -> None:
    links = _relative_links(README)
    assert len(links) >= 10, links  # the README is the front door: it links to the docs
    problems = []
    for line, target in links:
        path, _, anchor = target.partition("#")
        file = (README.parent / path).resolve() if path else README
        if not file.exists():
            problems.append(f"README.md:{line}: {target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            problems.append(f"README.md:{line}: {target}: {_name(file)} has no heading #{anchor}")
    assert not problems, "\n".join(problems)


def test_anchors_and_links_are_read_as_mkdocs_and_the_readme_write_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## CPU: `make setup`\n\n```bash\n# not a heading\n[x](in-code.md)\n```\n"
        "See [a](a.md#cpu-make-setup), [b](https://example.org) and `[c](in-span.md)`.\n"
    )
    assert _anchors(page) == {"title", "cpu-make-setup"}
    assert _relative_links(page) == [(9, "a.md#cpu-make-setup")]
