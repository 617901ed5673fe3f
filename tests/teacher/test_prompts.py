"""Prompt templates: loading, passage text, message assembly and fitting a token budget."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.infra.errors import InputError
from pipeline.teacher.prompts import (
    PromptOverflow,
    build_messages,
    fit_messages,
    load_prompt,
    passage_content,
    prompts_dir,
    replace_number,
)


def words_counter(messages: list[dict[str, str]]) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return sum(len(m["content"].split()) for m in messages)


def test_replace_number():
    assert replace_number("see [1], [23] and [x] or [ 4] (5)") == "see (1), (23) and [x] or [ 4] (5)"


def test_passage_content_truncates_on_whitespace_and_rewrites_brackets():
    text = "  one\ttwo\n three [4]   five six  "
    assert passage_content(text, None, 300) == "one two three (4) five six"
    assert passage_content(text, None, 4) == "one two three (4)"
    assert passage_content(text, "", 2) == "one two"
    with pytest.raises(ValueError):
        passage_content(text, None, 0)


def test_a_title_is_prefixed_and_counts_towards_the_budget():
    assert passage_content("body text", "A [1] title", 300) == "Title: A (1) title Content: body text"
    assert passage_content("body text", "A title", 4) == "Title: A title Content:"


def test_rank_zephyr_messages_by_hand():
    template = load_prompt("rank_zephyr")
    messages = build_messages(template, "what is [2] x", [("alpha beta", None), ("gamma", "T")], 300)
    assert messages[0] == {
        "role": "system",
        "content": "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query",
    }
    assert messages[1]["role"] == "user" and len(messages) == 2
    assert messages[1]["content"] == (
        "I will provide you with 2 passages, each indicated by a numerical identifier []. "
        "Rank the passages based on their relevance to the search query: what is (2) x.\n\n"
        "[1] alpha beta\n[2] Title: T Content: gamma\n"
        "Search Query: what is (2) x.\nRank the 2 passages above based on their relevance to the search query. "
        "All the passages should be included and listed using identifiers, in descending order of relevance. "
        "The output format should be [] > [], e.g., [2] > [1], Answer concisely and directly and only respond "
        "with the ranking results, do not say any word or explain."
    )


def test_every_shipped_prompt_loads_and_records_its_provenance():
    names = sorted(p.stem for p in prompts_dir().glob("*.toml"))
    assert {"rank_zephyr", "rank_gpt", "rank_vicuna"} <= set(names)
    for name in names:
        template = load_prompt(name)
        assert template.name == name and template.path == prompts_dir() / f"{name}.toml"
        assert template.sha256 == hashlib.sha256(template.path.read_bytes()).hexdigest()
        user = build_messages(template, "q", [("p", None)], 10)[-1]["content"]
        assert ("[A] p\n" if template.identifiers == "letters" else "[1] p\n") in user
    assert load_prompt("rank_vicuna").system is None
    assert load_prompt(str(prompts_dir() / "rank_gpt.toml")).system.startswith("You are RankGPT")


def test_an_unknown_name_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match="rank_zephyr"):
        load_prompt("rank_zephir")
    with pytest.raises(FileNotFoundError):
        load_prompt("/nonexistent/prompt.toml")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('prefix = "p"\npassage = "[{rank}] {passage}"\n', "missing keys \\['suffix'\\]"),
        ('prefix = "p"\npassage = "[{rank}] {passage}"\nsuffix = "s"\nsufix = "s"\n', "unknown keys"),
        ('prefix = "{qeury}"\npassage = "[{rank}] {passage}"\nsuffix = "s"\n', "fields \\['qeury'\\]"),
        ('prefix = "p"\npassage = "{passage}"\nsuffix = "s"\n', "both"),
        ('prefix = "p {"\npassage = "[{rank}] {passage}"\nsuffix = "s"\n', "str.format"),
        ('prefix = 3\npassage = "[{rank}] {passage}"\nsuffix = "s"\n', "string"),
        ("prefix = \n", "TOML"),
    ],
)
def test_bad_template_files_are_named(tmp_path: Path, body: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(InputError, match=message) as error:
        load_prompt(str(path))
    assert str(path) in str(error.value)


def test_fit_messages_keeps_the_budget_when_it_fits():
    template = load_prompt("rank_zephyr")
    passages = [(" ".join(["w"] * 50), None)] * 4
    messages, words, tokens = fit_messages(template, "q", passages, words_counter, 10_000, max_words=30)
    assert words == 30 and tokens == words_counter(messages)
    assert messages == build_messages(template, "q", passages, 30)


def test_fit_messages_shrinks_like_rank_llm():
    template = load_prompt("rank_zephyr")
    passages = [(" ".join(["w"] * 500), None)] * 20
    overhead = words_counter(build_messages(template, "q", [("", None)] * 20, 1))  # all but passage words
    budget = overhead + 20 * 100  # room for exactly 100 words per passage
    messages, words, tokens = fit_messages(template, "q", passages, words_counter, budget)
    # rank_llm's steps: 300 -> 300 - 4000 // 80 = 250 -> 250 - 3000 // 80 = 213 -> ... until it fits
    trace, w = [], 300
    while overhead + 20 * w > budget:
        w -= max(1, (overhead + 20 * w - budget) // 80)
        trace.append(w)
    assert trace[:2] == [250, 213] and words == trace[-1] <= 100
    assert tokens == words_counter(messages) <= budget


def test_fit_messages_raises_when_one_word_does_not_fit():
    template = load_prompt("rank_zephyr")
    passages = [("a b c", None)] * 20
    needed = words_counter(build_messages(template, "q", passages, 1))
    with pytest.raises(PromptOverflow, match=f"{needed} tokens .* budget is {needed - 1}") as error:
        fit_messages(template, "q", passages, words_counter, needed - 1)
    assert (error.value.tokens, error.value.budget) == (needed, needed - 1)
    assert fit_messages(template, "q", passages, words_counter, needed)[1:] == (1, needed)


def test_a_letter_prompt_names_passages_with_letters_and_protects_letter_brackets():
    template = load_prompt("rank_zephyr_alpha")
    assert template.identifiers == "letters"
    user = build_messages(template, "what is [A]?", [("see [B] and [2]", None), ("q", "T")], 300)[-1]["content"]
    assert "[A] see (B) and [2]\n[B] Title: T Content: q\n" in user
    assert "query: what is (A)?" in user and "e.g., [B] > [A]" in user


def test_an_unknown_identifier_scheme_is_refused(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text('identifiers = "roman"\nprefix = "p"\npassage = "[{rank}] {passage}"\nsuffix = "s"\n')
    with pytest.raises(InputError, match="'identifiers' must be one of"):
        load_prompt(str(path))
