"""Replay rank_llm's logged RankVicuna-7B runs on TREC DL19 and DL20 through our pure core.

The reference (data/shared/reference/teacher_runs/rankvicuna7b, see ../shared/reference/README.md) holds every
prompt rank_llm built and every raw reply, 9 windows per query in processing order, and the
final runs. We drive `rerank` with a window ranker that takes the next logged reply, parses it
with `parse_permutation`, and checks the user message that `build_messages` builds from the
same candidates (prompts/rank_vicuna.toml, 300 words per passage: rank_llm's budget for
windows of 20) against the logged one. The word budget is not exercised by this data: the
longest passage in these top-100s has 216 words, and no prompt needed shrinking.

Measured: DL19 387/387 windows, 43/43 queries; DL20 486/486 windows, 54/54 queries (against
run_dl20.txt; run_dl20_alt.txt is another run), and every user message equal character for
character (passages go through ftfy.fix_text in both).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pytest

from pipeline.teacher.prompts import build_messages, load_prompt
from pipeline.teacher.recorded_replies import read_rank_llm_dump
from pipeline.teacher.replies import parse_permutation
from pipeline.teacher.windows import rerank
from tests.conftest import SHARED_DATA

REFERENCE = SHARED_DATA.resolve().parent / "reference" / "teacher_runs" / "rankvicuna7b"
MAX_WORDS = 300
# FastChat's Vicuna conversation: "<system> USER: <user> " and rank_llm appends " ASSISTANT:"
USER, ASSISTANT = " USER: ", "  ASSISTANT:"
YEARS = {"19": 43, "20": 54}  # queries per year


@functools.cache
def load_logged_windows(year: str) -> list[tuple[str, str]]:
    """(user message, raw reply) of every logged window, in processing order."""
    path = REFERENCE / f"prompts_responses_dl{year}.json"
    if not path.is_file():
        pytest.fail(f"reference log not found: {path}")
    out = []
    records, _ = read_rank_llm_dump(path)
    for record in records:
        _, sep, rest = record.prompt.partition(USER)
        assert sep and rest.endswith(ASSISTANT), record.prompt[:200]
        out.append((rest[: -len(ASSISTANT)], record.response))
    return out


@dataclass
class Replay:
    messages: list[tuple[str, str]]  # (ours, logged) user message per window
    rankings: dict[str, tuple[list[str], list[str]]]  # qid -> (ours, rank_llm's final top-100)
    longest: int  # words of the longest passage shown


@functools.cache
def replay(year: str) -> Replay:
    logged = iter(load_logged_windows(year))
    queries = json.loads((SHARED_DATA / "trec-dl" / f"retrieve_results_dl{year}.json").read_text())
    runs: dict[str, list[tuple[int, str]]] = {}
    for line in (REFERENCE / f"run_dl{year}.txt").read_text().splitlines():
        qid, _, doc_id, rank, _, _ = line.split()
        runs.setdefault(qid, []).append((int(rank), doc_id))
    template = load_prompt("rank_vicuna")
    result = Replay([], {}, 0)
    for query in queries:
        texts = {hit["docid"]: hit["content"] for hit in query["hits"]}

        def rank_window(ids: list[str], query=query, texts=texts) -> list[int]:
            user, reply = next(logged)
            messages = build_messages(template, query["query"], [(texts[d], None) for d in ids], MAX_WORDS)
            assert [m["role"] for m in messages] == ["user"]
            result.messages.append((messages[0]["content"], user))
            result.longest = max(result.longest, *(len(texts[d].split()) for d in ids))
            return parse_permutation(reply, len(ids)).order

        qid = str(query["hits"][0]["qid"])
        ours = rerank([hit["docid"] for hit in query["hits"]], rank_window, depth=100)
        result.rankings[qid] = (ours[:100], [doc for _, doc in sorted(runs[qid])][:100])
    assert next(logged, None) is None, "logged windows left over"
    return result


@pytest.mark.parametrize("year", YEARS)
def test_final_rankings_equal_rank_llms_run(year):
    result = replay(year)
    assert len(result.messages) == 9 * YEARS[year]
    matched = sum(ours == theirs for ours, theirs in result.rankings.values())
    assert matched == len(result.rankings) == YEARS[year]


@pytest.mark.parametrize("year", YEARS)
def test_user_messages_equal_rank_llms(year):
    result = replay(year)
    assert result.longest < MAX_WORDS  # so any budget >= the longest passage reproduces rank_llm
    assert len(result.messages) == 9 * YEARS[year]
    assert all(ours == logged for ours, logged in result.messages)
