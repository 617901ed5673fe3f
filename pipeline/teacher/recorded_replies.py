"""Recorded replies (`distillm ingest replies`): rank_llm's prompts and replies -> a reply log.

    distillm ingest replies prompts_responses_dl19.json --run bm25.dl19.run --queries q.tsv \\
        --corpus STORE --prompt rank_vicuna --model castorini/rank_vicuna_7b_v1 --out dl19.replies.jsonl

rank_llm writes every window's prompt and raw reply (`prompts_responses_*.json`: JSON objects
`{"prompt", "response"}` one after another, comma-separated, no enclosing list; a killed run
leaves a truncated last object). Here each recorded window is matched to the window our
sliding window builds from the same run: our renderer's messages for that window (the
`--prompt` template, `--max-words`) must each appear verbatim in the recorded prompt (which
also holds rank_llm's chat template around them). The matched reply is parsed and applied
before the query's next window is built, exactly as a live run does, and the window is
written as an ordinary reply-log record with OUR prompt hash. `distillm rerank --backend
replay:LOG` then finds every window by its prompt hash and re-derives rank_llm's rankings.

Records are taken in dump order. A record belongs to the query of the record before it (a
query's windows come in order) or to the next query of the run (query-major or
window-major dumps both match at once); otherwise every query with windows left is tried.
A record that matches no pending window is an error naming the record, its byte offset and
the window it was expected to be, with the first character where the texts differ: a dump
of other candidates, another prompt template or another passage budget never turns into a
silently wrong ranking. Queries of the run that the dump does not cover are an error too
(`--partial` accepts them: their windows are simply not in the log).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.reply_log import ReplyLogWriter, write_settings
from pipeline.contract.rerank_inputs import read_rerank_inputs
from pipeline.infra.checksums import file_digest
from pipeline.infra.errors import InputError
from pipeline.teacher.prompts import PromptTemplate, build_messages, load_prompt
from pipeline.teacher.render import messages_sha256
from pipeline.teacher.replies import window_record
from pipeline.teacher.resume import settings_record
from pipeline.teacher.settings import TeacherSettings
from pipeline.teacher.windows import Window, apply_permutation, sliding_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DumpRecord:
    number: int  # 1-based position in the dump
    offset: int  # character offset of the object in the file
    prompt: str  # the recorded prompt as one text (message contents joined when it is a list)
    response: str


def read_rank_llm_dump(path: str | Path) -> tuple[list[DumpRecord], int]:
    """The dump's complete records and the length of a truncated tail (0 if none).

    Raises InputError naming the record for a record that is not an object with a string
    (or message list) `prompt` and a string `response`, or for bytes that are not UTF-8.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, None, f"byte {e.start}: not UTF-8 ({e.reason})") from None
    decoder, pos, records = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] in ",[]"):
            pos += 1
        if pos >= len(text):
            return records, 0
        start = pos
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            if _only_truncated(text, start):
                return records, len(text) - start
            raise InputError(
                path, None, f"record {len(records) + 1} (character {start}): not valid JSON ({e.msg})"
            ) from None
        records.append(_dump_record(obj, path, len(records) + 1, start))


def _only_truncated(text: str, start: int) -> bool:
    """True when the unparsable text from `start` is a last object the file cut short (a crash):
    a complete record further on would make the file end with its closing brace."""
    return text[start] == "{" and not text[start:].rstrip().rstrip(",]").rstrip().endswith("}")


def _dump_record(obj: Any, path: Path, number: int, offset: int) -> DumpRecord:
    where = f"record {number} (character {offset})"
    if not isinstance(obj, dict) or "prompt" not in obj or "response" not in obj:
        raise InputError(path, None, f"{where}: expected an object with 'prompt' and 'response'")
    prompt, response = obj["prompt"], obj["response"]
    if isinstance(prompt, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt):
        prompt = "\n".join(m["content"] for m in prompt)  # chat messages (RankGPT-style dumps)
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise InputError(path, None, f"{where}: 'prompt' must be text or chat messages and 'response' text")
    return DumpRecord(number, offset, prompt, response)


@dataclass
class _Query:
    qid: str
    query: str
    ranking: list[str]
    windows: list[Window]
    done: int = 0
    expected: tuple[list[dict[str, str]], list[str]] | None = None  # (messages, doc ids) of the next window

    @property
    def finished(self) -> bool:
        return self.done == len(self.windows)


def ingest_dump(
    dump: str | Path,
    lists: dict[str, list[str]],
    queries: dict[str, str],
    passages: Any,
    template: PromptTemplate,
    out: str | Path,
    settings: dict[str, Any],
    depth: int = TeacherSettings.depth,
    window: int = TeacherSettings.window,
    stride: int = TeacherSettings.stride,
    max_words: int = TeacherSettings.max_words,
    partial: bool = False,
) -> dict[str, Any]:
    """Match the dump's records to the run's windows and write them as a reply log at `out`
    (with its `.settings.json`). `passages(doc_ids)` returns the corpus passages. Returns counts."""
    dump, out = Path(dump), Path(out)
    records, tail = read_rank_llm_dump(dump)
    if tail:
        log.warning("%s: ignored a truncated last record (%d characters): a crash artefact", dump, tail)
    states = [
        _Query(qid, queries[qid], docs[:depth], sliding_windows(min(depth, len(docs)), window, stride))
        for qid, docs in lists.items()
    ]
    texts: dict[str, tuple[str, str | None]] = {}

    def expected(state: _Query) -> tuple[list[dict[str, str]], list[str]]:
        if state.expected is None:
            w = state.windows[state.done]
            doc_ids = state.ranking[w.start : w.end]
            missing = [d for d in doc_ids if d not in texts]
            texts.update({p.doc_id: (p.text, p.title) for p in passages(missing)})
            state.expected = (build_messages(template, state.query, [texts[d] for d in doc_ids], max_words), doc_ids)
        return state.expected

    def matches(state: _Query, record: DumpRecord) -> bool:
        return _contains_in_order(record.prompt, [m["content"] for m in expected(state)[0]])

    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    previous = -1
    with ReplyLogWriter(tmp) as writer:
        for record in records:
            index = _find_query(states, previous, record, matches)
            if index is None:
                raise InputError(dump, None, _no_match_message(record, states, previous, expected))
            state = states[index]
            messages, doc_ids = expected(state)
            w = state.windows[state.done]
            info = {"prompt_sha256": messages_sha256(messages), "words_per_passage": max_words, "prompt_tokens": 0}
            entry = window_record(
                state.qid, w, doc_ids, info, record.response, 0, 0.0, identifiers=template.identifiers
            )
            entry["source"] = f"{dump.name}#{record.number}"
            writer.write(entry)
            state.ranking = apply_permutation(state.ranking, w, [i - 1 for i in entry["permutation"]])
            state.done, state.expected, previous = state.done + 1, None, index
    complete = sum(s.finished for s in states)
    incomplete = [s for s in states if not s.finished]
    if incomplete and not partial:
        tmp.unlink()
        first = incomplete[0]
        raise InputError(
            dump,
            None,
            f"{len(records)} records cover {complete} of {len(states)} queries of the run; query {first.qid!r} "
            f"has {first.done} of {len(first.windows)} windows (a truncated dump or another run? --partial keeps "
            "what is there)",
        )
    tmp.replace(out)
    write_settings(
        out, {**settings, "source": {"dump": str(dump), "sha256": file_digest(dump), "records": len(records)}}
    )
    counts = {
        "records": len(records),
        "windows_matched_by_prompt": len(records),
        "queries_complete": complete,
        "queries_incomplete": len(incomplete),
        "truncated_tail_characters": tail,
    }
    log.info("%s -> %s: %s", dump, out, counts)
    return counts


def _contains_in_order(text: str, parts: list[str]) -> bool:
    pos = 0
    for part in parts:
        found = text.find(part, pos)
        if found < 0:
            return False
        pos = found + len(part)
    return True


def _find_query(states: list[_Query], previous: int, record: DumpRecord, matches) -> int | None:
    """The query this record is a window of: the previous record's, the next one, else any pending."""
    for index in _guesses(len(states), previous):
        if not states[index].finished and matches(states[index], record):
            return index
    return next((i for i, s in enumerate(states) if not s.finished and matches(s, record)), None)


def _guesses(n: int, previous: int) -> list[int]:
    """The previous record's query (query-major dumps), then the next one (window-major dumps)."""
    return [previous, (previous + 1) % n] if previous >= 0 else [0]


def _no_match_message(record: DumpRecord, states: list[_Query], previous: int, expected) -> str:
    where = f"record {record.number} (character {record.offset})"
    pending = [i for i in _guesses(len(states), previous) if not states[i].finished]
    if not pending:
        return f"{where}: every window of the run is matched already: a reply for a query not in the run?"
    state = states[pending[0]]
    messages, _ = expected(state)
    ours = messages[-1]["content"]
    # where our user message stops agreeing with the recorded prompt, aligned on its first line
    anchor = record.prompt.find(ours.split("\n", 1)[0][:40])
    theirs = record.prompt[anchor:] if anchor >= 0 else record.prompt
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    return (
        f"{where}: its prompt matches no window of the run (other candidates, prompt template or --max-words?); "
        f"expected query {state.qid!r} window {state.done}; first difference at character {at} of the user "
        f"message: ours {ours[max(0, at - 30) : at + 40]!r} vs recorded {theirs[max(0, at - 30) : at + 40]!r}"
    )


def ingest_files(
    dump: str | Path,
    run: str | Path,
    queries: str | Path,
    corpus: str | Path,
    prompt: str,
    model: str,
    out: str | Path,
    depth: int = TeacherSettings.depth,
    window: int = TeacherSettings.window,
    stride: int = TeacherSettings.stride,
    max_words: int = TeacherSettings.max_words,
    max_queries: int = 0,
    partial: bool = False,
) -> dict[str, Any]:
    """`ingest_dump` over files: the run, queries and corpus store are read and checked first."""
    sliding_windows(depth, window, stride)  # validates the window settings
    template = load_prompt(prompt)
    _, lists, query_texts, store = read_rerank_inputs(run, queries, corpus, max_queries)
    settings = TeacherSettings(
        model=model, prompt=prompt, depth=depth, window=window, stride=stride, max_words=max_words
    )
    record = settings_record(settings, template, None)
    return ingest_dump(
        dump, lists, query_texts, store.passages, template, out, record, depth, window, stride, max_words, partial
    )
