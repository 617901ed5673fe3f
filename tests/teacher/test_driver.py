"""The teacher end to end on real DL19 candidates with real engines and a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.contract.reply_log import read_reply_log
from pipeline.infra.errors import InputError
from pipeline.teacher.driver import Teacher
from pipeline.teacher.prompts import load_prompt
from pipeline.teacher.render import permutation_regex
from pipeline.teacher.reuse import ReplayBackend
from pipeline.teacher.settings import TeacherSettings

N_QUERIES = 4  # x 9 windows


def first(lists: dict[str, list[str]], n: int = N_QUERIES) -> dict[str, list[str]]:
    return dict(list(lists.items())[:n])


def run_teacher(backend, renderer, dl19, log_path: Path, lists=None, early=True, **settings):
    all_lists, queries, corpus = dl19
    settings = TeacherSettings(model="tiny", **settings)
    teacher = Teacher(backend, renderer, settings, load_prompt(settings.prompt), corpus, early=early)
    out = teacher.run(lists or first(all_lists), queries, log_path, progress=False)
    return out, teacher.tally, [r for _, r in read_reply_log(log_path)]


@pytest.mark.engine
def test_vllm_teacher_reranks_dl19_windows(vllm_backend, renderer, dl19, tmp_path: Path):
    lists = first(dl19[0])
    out, tally, records = run_teacher(vllm_backend, renderer, dl19, tmp_path / "log.jsonl")
    # every query keeps exactly its candidates, re-ordered
    assert out.keys() == lists.keys()
    assert all(sorted(out[q]) == sorted(lists[q]) for q in lists)
    # 9 windows per query, each logged once, bottom-up: ranks 81-100 first, 1-20 last
    assert tally.windows == len(records) == 9 * N_QUERIES
    by_query = {}
    for r in records:
        by_query.setdefault(r["qid"], []).append(r)
    for rs in by_query.values():
        assert [r["window"] for r in rs] == list(range(9))
        assert [(r["start_rank"], r["end_rank"]) for r in rs] == [(81 - 10 * i, 100 - 10 * i) for i in range(9)]
        assert all(sorted(r["permutation"]) == list(range(1, 21)) for r in rs)
    # real RankZephyr token counts: ~2,200 prompt tokens per window on DL19 (300-word cap)
    mean_tokens = tally.prompt_tokens / tally.windows
    assert 1500 < mean_tokens < 3200
    assert all(r["completion_tokens"] <= renderer.permutation_tokens(20) for r in records)
    # a random model's replies need repair, and every repair is counted
    assert tally.repaired == sum(1 for r in records if r["repairs"])
    assert tally.repaired > 0


@pytest.mark.engine
def test_constrained_decoding_gives_well_formed_replies(vllm_backend, renderer, dl19, tmp_path: Path):
    _, tally, records = run_teacher(
        vllm_backend, renderer, dl19, tmp_path / "log.jsonl", constrained=True, lists=first(dl19[0], 2)
    )
    assert tally.windows == 18
    assert tally.repairs["wrong_format"] == 0 and tally.repairs["out_of_range"] == 0, [
        (r["reply"], r["completion_tokens"]) for r in records if r["repairs"] and "wrong_format" in r["repairs"]
    ]
    import re

    assert all(re.fullmatch(permutation_regex(20), r["reply"]) for r in records)


def without_timings(records: list[dict]) -> list[dict]:
    """Log records in (query, window) order without their timings: what must not depend on scheduling."""
    records = [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    return sorted(records, key=lambda r: (r["qid"], r["window"]))


@pytest.mark.engine
def test_early_submission_changes_nothing_but_when_windows_start(vllm_backend, renderer, dl19, tmp_path: Path):
    """Each window's successor is submitted once the reply names the identifiers it carries
    over; the log and the run are those of waiting for every reply. (The random model's
    constrained replies name only 2-3 distinct identifiers, so windows of 4 with stride 2,
    which carry over 2: 9 windows over the top 20.)"""
    lists = first(dl19[0], 3)
    kwargs = {"lists": lists, "constrained": True, "depth": 20, "window": 4, "stride": 2}
    out, tally, records = run_teacher(vllm_backend, renderer, dl19, tmp_path / "early.jsonl", **kwargs)
    plain_out, plain_tally, plain = run_teacher(
        vllm_backend, renderer, dl19, tmp_path / "plain.jsonl", early=False, **kwargs
    )
    assert out == plain_out and without_timings(records) == without_timings(plain)
    assert plain_tally.early == 0
    # a window can go early when its predecessor's reply names 2 distinct identifiers
    can = sum(r["window"] < 8 and r["n_missing"] <= 2 for r in records)
    assert 0 < tally.early <= can and tally.early_redone == 0
    # each query's windows are logged in order, and each once
    for qid in lists:
        assert [r["window"] for r in records if r["qid"] == qid] == list(range(9))


@pytest.mark.engine
def test_an_early_window_on_a_wrong_head_is_cancelled_and_redone(
    vllm_backend, renderer, dl19, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """If the finished reply does not give the doc ids an early window was built on (a
    later `</think>` could do that), the early window is dropped and submitted again."""
    from pipeline.teacher import driver as rerank

    kwargs = {"lists": first(dl19[0], 2), "constrained": True, "depth": 20, "window": 4, "stride": 2}
    plain_out, _, plain = run_teacher(vllm_backend, renderer, dl19, tmp_path / "plain.jsonl", early=False, **kwargs)
    real = rerank.settled_head

    def wrong_head(partial: str, n: int, m: int) -> list[int] | None:
        head = real(partial, n, m)
        return None if head is None else head[::-1]  # the right identifiers, in the wrong order

    monkeypatch.setattr(rerank, "settled_head", wrong_head)
    out, tally, records = run_teacher(vllm_backend, renderer, dl19, tmp_path / "early.jsonl", **kwargs)
    assert out == plain_out and without_timings(records) == without_timings(plain)
    assert tally.early == 0 and tally.early_redone > 0


class PartialSpy:
    """The vLLM backend, noting the longest partial reply it hands out."""

    def __init__(self, backend):
        self.backend, self.longest_partial = backend, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def poll(self):
        replies = self.backend.poll()
        for reply in replies:
            if not reply.finished:
                self.longest_partial = max(self.longest_partial, reply.completion_tokens)
        return replies


@pytest.mark.engine
def test_a_reply_that_does_not_settle_stops_streaming(vllm_backend, renderer, dl19, tmp_path: Path):
    """The random model's free replies never name the carried-over identifiers: the
    driver stops following them half again past where a well-formed reply would have."""
    kwargs = {"lists": first(dl19[0], 2), "depth": 20, "window": 4, "stride": 2}
    spy = PartialSpy(vllm_backend)
    out, tally, records = run_teacher(spy, renderer, dl19, tmp_path / "early.jsonl", **kwargs)
    plain_out, _, plain = run_teacher(vllm_backend, renderer, dl19, tmp_path / "plain.jsonl", early=False, **kwargs)
    assert out == plain_out and without_timings(records) == without_timings(plain)
    budget = renderer.permutation_tokens(4)
    assert tally.early == 0 and max(r["completion_tokens"] for r in records) > 1.5 * budget / 2 + 1
    assert 0 < spy.longest_partial <= 1.5 * budget / 2 + 1


@pytest.mark.engine
def test_vllm_path_equals_plain_generate(vllm_backend, renderer, dl19, tmp_path: Path):
    """Request-by-request submission gives the same greedy replies as LLM.generate."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    log_path = tmp_path / "log.jsonl"
    run_teacher(vllm_backend, renderer, dl19, log_path, lists=first(dl19[0], 2))
    records = [r for _, r in read_reply_log(log_path)]
    _, queries, corpus = dl19
    template = load_prompt("rank_zephyr")
    from pipeline.teacher.prompts import fit_messages

    prompts = []
    for r in records:
        passages = [(p.text, p.title) for p in corpus.passages(r["doc_ids"])]
        messages, _, _ = fit_messages(
            template, queries[r["qid"]], passages, renderer.count_tokens, 4096 - renderer.permutation_tokens(20), 300
        )
        prompts.append(TokensPrompt(prompt_token_ids=renderer.render(messages)[1]))
    outputs = vllm_backend.llm.generate(
        prompts, SamplingParams(temperature=0.0, max_tokens=renderer.permutation_tokens(20)), use_tqdm=False
    )
    same = sum(o.outputs[0].text == r["reply"] for o, r in zip(outputs, records, strict=True))
    assert same == len(records)


def test_replay_reproduces_a_run_without_a_model(dl19, tmp_path: Path, renderer):
    """Replay a log of hand-written replies (clean, repeated, missing, out of range, empty, prose)."""
    lists = first(dl19[0], 2)
    reverse = " > ".join(f"[{i}]" for i in range(20, 0, -1))
    replies = [reverse, "[5] > [5] > [4]", "[20] > [19]", "[0] > [21] > [7]", "", "I cannot rank these."]
    log_path = tmp_path / "crafted.jsonl"
    with open(log_path, "w") as f:
        for qid in lists:
            for window in range(9):
                f.write(
                    json.dumps(
                        {
                            "qid": qid,
                            "window": window,
                            "prompt_sha256": "x",
                            "completion_tokens": 1,
                            "reply": replies[window % len(replies)],
                        }
                    )
                    + "\n"
                )
    scripted = ReplayBackend(log_path, by_window=True)  # replies scripted per window, no prompts
    out, tally, records = run_teacher(scripted, renderer, dl19, tmp_path / "new.jsonl", lists=lists)
    assert tally.windows == 18 and scripted.matched == {"prompt_sha256": 0, "qid_window": 18}
    assert tally.repairs["repetition"] == 2 * 2  # window 1 and 7 of each query
    assert tally.repairs["out_of_range"] == 2 * 1
    assert tally.repairs["wrong_format"] == 2 * 2  # empty reply and prose
    assert tally.repairs["missing"] == 2 * 7 and tally.repaired == 2 * 7  # windows 0 and 6 are clean
    assert [r["repairs"] for r in records if r["window"] == 0] == [[], []]
    # the log of the new run replays to the identical output by prompt hash
    replay = ReplayBackend(tmp_path / "new.jsonl")
    again, _, _ = run_teacher(replay, renderer, dl19, tmp_path / "again.jsonl", lists=lists)
    assert again == out and replay.matched == {"prompt_sha256": 18, "qid_window": 0}
    # with another word budget every prompt differs: replay refuses, naming the window...
    with pytest.raises(InputError, match=r"no logged reply for query '\d+' window 0 with this prompt"):
        run_teacher(
            ReplayBackend(tmp_path / "new.jsonl"), renderer, dl19, tmp_path / "other.jsonl", lists=lists, max_words=50
        )
    # ...unless told to take the reply logged for the same (qid, window), counted
    replay = ReplayBackend(tmp_path / "new.jsonl", by_window=True)
    other, _, _ = run_teacher(replay, renderer, dl19, tmp_path / "other2.jsonl", lists=lists, max_words=50)
    assert other == out and replay.matched == {"prompt_sha256": 0, "qid_window": 18}


def test_prompt_that_cannot_fit_keeps_order_and_is_counted(dl19, tmp_path: Path, renderer):
    lists = first(dl19[0], 1)
    log_path = tmp_path / "replies.jsonl"
    log_path.write_text(
        "".join(
            json.dumps({"qid": q, "window": w, "prompt_sha256": "-", "reply": "[1]"}) + "\n"
            for q in lists
            for w in range(9)
        )
    )
    out, tally, records = run_teacher(
        ReplayBackend(log_path, by_window=True), renderer, dl19, tmp_path / "log.jsonl", lists=lists, max_model_len=150
    )
    assert out == lists
    assert tally.prompt_overflow == 9 and all(r["reply"] is None for r in records)


def test_short_candidate_lists_and_depth(dl19, tmp_path: Path, renderer):
    all_lists, _, _ = dl19
    qid = next(iter(all_lists))
    lists = {qid: all_lists[qid][:15]}
    log_path = tmp_path / "replies.jsonl"
    log_path.write_text(json.dumps({"qid": qid, "window": 0, "prompt_sha256": "-", "reply": "[15] > [1]"}) + "\n")
    scripted = ReplayBackend(log_path, by_window=True)
    out, tally, records = run_teacher(scripted, renderer, dl19, tmp_path / "log.jsonl", lists=lists)
    assert tally.windows == 1 and (records[0]["start_rank"], records[0]["end_rank"]) == (1, 15)
    assert out[qid] == [lists[qid][14], lists[qid][0], *lists[qid][1:14]]
    # depth 30 of 100: 3 windows over the top 30; ranks 31-100 stay in first-stage order
    lists = {qid: all_lists[qid]}
    log_path.write_text(
        "".join(
            json.dumps({"qid": qid, "window": w, "prompt_sha256": "-", "reply": "[20] > [1]"}) + "\n" for w in range(3)
        )
    )
    scripted = ReplayBackend(log_path, by_window=True)
    out, tally, _ = run_teacher(scripted, renderer, dl19, tmp_path / "log2.jsonl", lists=lists, depth=30)
    assert tally.windows == 2 and out[qid][30:] == all_lists[qid][30:] and sorted(out[qid]) == sorted(all_lists[qid])
