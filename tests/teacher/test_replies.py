"""Reply parsing: rank_llm's repair rules, with every repair named and counted."""

from __future__ import annotations

import pytest

from pipeline.teacher.replies import (
    REASONING_CUT_OFF,
    REPAIRS,
    parse_permutation,
    parse_reply,
    rank_by_logprobs,
    settled_head,
    split_reasoning,
)

from .test_reference_replay import load_logged_windows


def rank_llm_order(reply: str, n: int) -> list[int]:
    """rank_llm's receive_permutation (clean_ranking_response + _remove_duplicate), restated."""
    if "</think>" in reply:
        reply = reply.split("</think>")[-1].strip()
    ids = [int(x) - 1 for x in "".join(c if c.isdigit() else " " for c in reply).split()]
    kept: list[int] = []
    for i in ids:
        if i not in kept and 0 <= i < n:
            kept.append(i)
    return kept + [i for i in range(n) if i not in kept]


def test_a_clean_reply():
    parsed = parse_permutation("[3] > [1] > [2]", 3)
    assert parsed.order == [2, 0, 1] and parsed.repairs == () and parsed.ok
    assert (parsed.n_missing, parsed.n_repeated, parsed.n_out_of_range) == (0, 0, 0)


@pytest.mark.parametrize("reply", ["[3]>[1]>[2]", "  [3] >  [1]\t> [2]\n", "[03] > [1] > [2]"])
def test_spacing_and_leading_zeros_are_still_clean(reply):
    parsed = parse_permutation(reply, 3)
    assert parsed.order == [2, 0, 1] and parsed.ok


def test_repetition_keeps_the_first_mention():
    parsed = parse_permutation("[2] > [1] > [2] > [3] > [1]", 3)
    assert parsed.order == [1, 0, 2] and parsed.repairs == ("repetition",) and parsed.n_repeated == 2


def test_missing_identifiers_are_appended_in_current_order():
    parsed = parse_permutation("[4] > [2]", 5)
    assert parsed.order == [3, 1, 0, 2, 4] and parsed.repairs == ("missing",) and parsed.n_missing == 3


@pytest.mark.parametrize(
    ("reply", "count"), [("[2] > [7] > [1] > [3]", 1), ("[0] > [2] > [1] > [3]", 1), ("[9] > [9]", 2)]
)
def test_out_of_range_identifiers_are_dropped(reply, count):
    parsed = parse_permutation(reply, 3)
    assert "out_of_range" in parsed.repairs and parsed.n_out_of_range == count
    assert parsed.order == rank_llm_order(reply, 3)


@pytest.mark.parametrize("reply", ["", "   ", "I cannot rank these passages."])
def test_a_reply_without_identifiers_keeps_the_order(reply):
    parsed = parse_permutation(reply, 4)
    assert parsed.order == [0, 1, 2, 3] and parsed.repairs == ("wrong_format", "missing") and parsed.n_missing == 4


def test_text_around_a_ranking_is_wrong_format_but_the_ranking_counts():
    parsed = parse_permutation("Sure! The ranking is [2] > [1] > [3].", 3)
    assert parsed.order == [1, 0, 2] and parsed.repairs == ("wrong_format",)


def test_reasoning_before_the_last_think_tag_is_ignored():
    reply = "<think>Passage [3] and 17 others... [1] is weak</think>\n</think> [2] > [3] > [1]"
    parsed = parse_permutation(reply, 3)
    assert parsed.order == [1, 2, 0] and parsed.ok


@pytest.mark.parametrize("reply", ["[２] > [１] > [３]", "[²] > [¹] > [³]", "[₂] > [①] > [3]", "[٢] > [१] > [3]"])
def test_digit_look_alikes_are_read_as_digits(reply):
    parsed = parse_permutation(reply, 3)
    assert parsed.order == [1, 0, 2] and parsed.repairs == ("wrong_format",)


def test_digits_rank_llm_cannot_convert_do_not_raise():
    # '⒈' (DIGIT ONE FULL STOP) and Ethiopic '፪' pass str.isdigit() but int() rejects them
    parsed = parse_permutation("[⒉] > [፩] > [3]", 3)
    assert parsed.order == [1, 0, 2] and parsed.repairs == ("wrong_format",)


def test_huge_numbers_are_out_of_range_without_int_conversion():
    parsed = parse_permutation("[" + "9" * 5000 + "] > [1] > [00000000000000000002]", 3)
    assert parsed.order == [0, 1, 2] and parsed.n_out_of_range == 1 and parsed.repairs == ("missing", "out_of_range")


def test_a_minus_sign_is_not_part_of_an_identifier():
    parsed = parse_permutation("[-3] > [1] > [2]", 3)
    assert parsed.order == [2, 0, 1] and parsed.repairs == ("wrong_format",)


def test_repairs_come_in_repairs_order():
    parsed = parse_permutation("ranking: [5] > [1] > [1]", 3)
    assert parsed.repairs == REPAIRS and parsed.order == [0, 1, 2]


@pytest.mark.parametrize("reply", ["", "[1]", "\x00\ud800", "]]>[[", "[1] > [", "</think>", "<think>" * 3])
def test_never_raises_and_always_returns_a_permutation(reply):
    for n in (0, 1, 20):
        assert sorted(parse_permutation(reply, n).order) == list(range(n))


@pytest.mark.parametrize("year", ["19", "20"])
def test_logged_rankvicuna_replies_parse_as_in_rank_llm(year):
    replies = [reply for _, reply in load_logged_windows(year)]
    parsed = [parse_permutation(reply, 20) for reply in replies]
    assert [p.order for p in parsed] == [rank_llm_order(reply, 20) for reply in replies]
    assert all(p.ok for p in parsed)  # every logged RankVicuna reply is a clean permutation


@pytest.mark.parametrize("year", ["19", "20"])
def test_the_head_a_partial_reply_settles_is_the_head_of_the_final_permutation(year):
    """Every prefix of every logged RankVicuna reply: the head it settles (if any) is the
    final permutation's, and for a clean reply 10 of 20 are settled about half-way."""
    settled_at = []
    for _, reply in load_logged_windows(year)[:200]:
        final = parse_permutation(reply, 20).order
        first = None
        for end in range(len(reply) + 1):
            head = settled_head(reply[:end], 20, 10)
            assert head is None or head == final[:10], (reply[:end], head)
            if head is not None and first is None:
                first = end
        settled_at.append(first / len(reply))
    assert max(settled_at) < 0.6  # so the next window can start with ~half the reply to go


@pytest.mark.parametrize(
    ("partial", "m", "head"),
    [
        ("", 1, None),
        ("[1", 1, None),  # "1" may become "12"
        ("[12", 1, None),
        ("[12]", 1, [11]),
        ("[12] > [12] > [3", 2, None),  # a repeat counts once
        ("[12] > [12] > [3]", 2, [11, 2]),
        ("[0] > [21] > [2]", 1, [1]),  # out of range: skipped
        ("[2] > [1]", 0, []),
        ("\uff3b\uff13\uff3d", 1, [2]),  # fullwidth [3], complete
        ("[\uff13", 1, None),  # fullwidth 3 at the end may still grow
        ("I think [5] </think> [2] > [1]", 2, [1, 0]),
    ],
)
def test_settled_head(partial, m, head):
    assert settled_head(partial, 20, m) == head


def test_a_later_think_tag_can_change_a_settled_head():
    """The one way appended text changes a settled head: the driver checks (test_driver)."""
    assert settled_head("[3] > [1]", 3, 1) == [2]
    assert parse_permutation("[3] > [1] </think> [1] > [2] > [3]", 3).order[:1] == [0]


def test_letter_identifiers_are_read_as_rank_llms_alphabetical_template_extracts_them():
    parsed = parse_permutation("[C] > [A] > [C] > [Z] > [b] > [AB]", 4, "letters")
    assert parsed.order == [2, 0, 1, 3]  # [b] and [AB] are not identifiers; B and D are appended
    assert parsed.repairs == ("wrong_format", "repetition", "missing", "out_of_range")
    assert (parsed.n_missing, parsed.n_repeated, parsed.n_out_of_range) == (2, 1, 1)
    assert parse_permutation("[B] > [A]", 2, "letters").ok
    assert not parse_permutation("[2] > [1]", 2, "letters").ok  # digits are not letter identifiers


def test_first_order_is_by_log_probability_then_window_order_and_missing_ones_are_counted():
    parsed = rank_by_logprobs({"C": -0.1, "A": -2.0, "B": -2.0, "E": -0.5, "[": -0.01}, 4, "letters")
    assert parsed.order == [2, 0, 1, 3]  # C; A and B tie (window order); D has none; E, "[" are no ids
    assert parsed.repairs == ("missing",) and parsed.n_missing == 1
    assert rank_by_logprobs({"2": -1.0, "1": -3.0}, 2, "numbers") == parse_permutation("[2] > [1]", 2)


def test_a_reasoning_reply_is_read_after_its_thoughts_only():
    decoy = "<think>[3] looks best, then [1]: [3] > [1] > [2]</think>\n\n"
    assert parse_reply(decoy + "[2] > [1] > [3]", 3) == parse_permutation("[2] > [1] > [3]", 3)
    # ReasonRank's answer tags are its format, not text to repair
    assert parse_reply(decoy + " <answer> [2] > [1] > [3] </answer>", 3).ok
    assert not parse_reply(decoy + "The answer: [2] > [1] > [3]", 3).ok  # counted as wrong_format
    # thoughts the server returned apart (reasoning_content) are never read
    assert parse_reply("[2] > [1] > [3]", 3, reasoning="[3] > [1]").order == [1, 0, 2]
    assert split_reasoning("[1]", reasoning="thoughts") == ("thoughts", "[1]")


def test_a_reply_cut_off_inside_its_reasoning_keeps_the_order_and_is_counted():
    cut_off = (
        parse_reply("<think>[3] > [1] > [2] is what I", 3),  # never closed
        parse_reply("[3] > [1] > [2] is what I", 3, opened=True),  # the prompt opened <think>
        parse_reply("", 3, reasoning="[3] > [1] > [2] is what I"),  # thoughts apart, no answer
    )
    for parsed in cut_off:
        assert parsed.order == [0, 1, 2] and parsed.repairs == ("missing", REASONING_CUT_OFF)
        assert parsed.n_missing == 3
    assert parse_reply("[3] > [1] > [2] is what I</think>[2] > [1] > [3]", 3, opened=True).order == [1, 0, 2]
    assert settled_head("<think>[3] > [1] > [2]", 3, 2) is None  # nothing settles while thinking
