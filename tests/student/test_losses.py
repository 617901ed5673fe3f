"""The losses: hand-computed values, lightning-ir's formulas, masking and ranking properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.student.losses import LOSSES, adr_mse_loss, approx_ranks, infonce_loss, ranknet_loss, target_ranks


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# --- hand-computed values -----------------------------------------------------------------


def test_ranknet_by_hand():
    # targets 3 > 2 > 1: pairs (0,1), (0,2), (1,2) with margins s_i - s_j = 1, 2, 1
    # -log sigmoid(m) = log(1 + e^-m): log(1 + e^-1) = 0.3132617, log(1 + e^-2) = 0.1269280
    # mean = (0.3132617 + 0.1269280 + 0.3132617) / 3 = 0.2511505
    assert ranknet_loss(t([2, 1, 0]), t([3, 2, 1])).item() == pytest.approx(0.2511505, abs=1e-6)


def test_ranknet_averages_over_all_pairs_of_the_batch_not_per_query():
    # query 1: 3 pairs as above (sum 0.7534514); query 2: pairs (0,1), (0,2), margins 0: log 2 = 0.6931472 each
    # over the 5 pairs: (0.7534514 + 2 * 0.6931472) / 5 = 0.4279492
    # (per query first would be (0.2511505 + 0.6931472) / 2 = 0.4721488)
    loss = ranknet_loss(t([2, 1, 0], [0, 0, 0]), t([3, 2, 1], [1, 0, 0]))
    assert loss.item() == pytest.approx(0.4279492, abs=1e-6)


def test_adr_mse_by_hand():
    # scores (0, 0): p = 1 + sigmoid(0) = 1.5 for both; ranks r = (1, 2)
    # (1.5 - 1)^2 / log2(2) = 0.25; (1.5 - 2)^2 / log2(3) = 0.25 / 1.5849625 = 0.1577324
    # mean = 0.2038662
    assert adr_mse_loss(t([0, 0]), t([2, 1])).item() == pytest.approx(0.2038662, abs=1e-6)
    # scores (1, 0): p0 = 1 + sigmoid(-1) = 1.2689414, p1 = 1 + sigmoid(1) = 1.7310586
    # 0.2689414^2 / 1 = 0.0723295; 0.2689414^2 / log2(3) = 0.0456353; mean = 0.0589824
    assert adr_mse_loss(t([1, 0]), t([2, 1])).item() == pytest.approx(0.0589824, abs=1e-6)


def test_infonce_by_hand():
    # -log(e^1 / (e^1 + e^0 + e^0)) = log(1 + 2/e) = 0.5514447
    assert infonce_loss(t([1, 0, 0]), t([1, 0, 0])).item() == pytest.approx(0.5514447, abs=1e-6)
    # the positive is the highest target wherever it sits: here the last item
    assert infonce_loss(t([1, 0, 0]), t([0, 0, 1])).item() == pytest.approx(math.log(1 + math.e + 1), abs=1e-6)


# --- the same numbers as lightning-ir's formulas ---------------------------------------------


def lightning_ir_ranknet(scores, targets):
    # lightning_ir/loss/pairwise.py RankNet + base.py get_pairwise_idcs
    q, i, j = torch.nonzero(targets[..., None] > targets[:, None], as_tuple=True)
    margin = scores[q, i] - scores[q, j]
    return F.binary_cross_entropy_with_logits(margin, torch.ones_like(margin))


def lightning_ir_approx_rank_mse_log2(scores, targets):
    # lightning_ir/loss/approximate.py ApproxRankMSE(discount="log2"), temperature 1
    diff = torch.sigmoid(scores[:, None] - scores[..., None]) * (1 - torch.eye(scores.shape[1]))
    approx = diff.sum(-1) + 1
    ranks = torch.argsort(torch.argsort(targets, descending=True)) + 1
    loss = F.mse_loss(approx, ranks.to(approx), reduction="none") / torch.log2(ranks + 1)
    return loss.mean()


def lightning_ir_infonce(scores, targets):
    # lightning_ir/loss/listwise.py InfoNCE
    return F.cross_entropy(scores, targets.argmax(dim=1))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ranknet_loss, lightning_ir_ranknet),
        (adr_mse_loss, lightning_ir_approx_rank_mse_log2),
        (infonce_loss, lightning_ir_infonce),
    ],
)
def test_matches_lightning_ir_on_random_lists(ours, theirs):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 10, generator=generator)
    # teacher ranks 1..10 (a random permutation per query) as gains depth - rank + 1
    ranks = torch.stack([torch.randperm(10, generator=generator) + 1 for _ in range(4)])
    targets = (100 - ranks + 1).float()
    assert ours(scores, targets).item() == pytest.approx(theirs(scores, targets).item(), rel=1e-6)


# --- properties ------------------------------------------------------------------------------


def test_ranknet_without_pairs_is_zero_and_differentiable():
    scores = torch.tensor([[0.3, -1.2, 2.0]], requires_grad=True)
    loss = ranknet_loss(scores, t([1, 1, 1]))  # all targets tied: no ordered pair
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(scores.grad, torch.zeros_like(scores))
    # lightning-ir gives NaN here (the mean of no pairs)
    assert math.isnan(lightning_ir_ranknet(scores.detach(), t([1, 1, 1])).item())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_invariant_to_the_order_of_the_list(name):
    generator = torch.Generator().manual_seed(1)
    scores, targets = torch.randn(2, 7, generator=generator), torch.randn(2, 7, generator=generator)
    perm = torch.randperm(7, generator=generator)
    assert LOSSES[name](scores[:, perm], targets[:, perm]).item() == pytest.approx(
        LOSSES[name](scores, targets).item(), rel=1e-5
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_perfect_order_beats_reversed_order(name):
    targets = t([5, 4, 3, 2, 1])
    assert LOSSES[name](t([5, 4, 3, 2, 1]), targets) < LOSSES[name](t([1, 2, 3, 4, 5]), targets)


def test_adr_mse_is_zero_only_when_score_gaps_are_large():
    targets = t([4, 3, 2, 1])
    # scores one apart in the right order still leave approximate ranks off the true ones
    # (p_1 = 1 + sigmoid(-1) + sigmoid(-2) + sigmoid(-3) = 1.43): the loss is not 0
    assert adr_mse_loss(t([3, 2, 1, 0]), targets).item() > 0.01
    # far apart, sigmoid saturates: p_i -> r_i and the loss vanishes
    assert adr_mse_loss(t([60, 40, 20, 0]), targets).item() < 1e-8
    assert torch.allclose(approx_ranks(t([60, 40, 20, 0])), t([1, 2, 3, 4]))


def test_target_ranks_break_ties_by_list_position():
    assert target_ranks(t([1, 3, 3, 0])).tolist() == [[3, 1, 2, 4]]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_padding_is_ignored(name):
    """A short list padded with junk under a mask gives the loss of the short list alone."""
    generator = torch.Generator().manual_seed(2)
    short_scores, short_targets = torch.randn(1, 3, generator=generator), t([3, 1, 2])
    long_scores, long_targets = torch.randn(1, 5, generator=generator), t([5, 1, 4, 2, 3])
    scores = torch.zeros(2, 5)
    scores[0, :3], scores[1] = short_scores[0], long_scores[0]
    scores[0, 3:] = torch.tensor([100.0, -100.0])  # junk the mask must hide
    targets = torch.zeros(2, 5)
    targets[0, :3], targets[1] = short_targets[0], long_targets[0]
    targets[0, 3:] = torch.tensor([99.0, -99.0])
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    scores.requires_grad_(True)
    loss = LOSSES[name](scores, targets, mask)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.equal(scores.grad[0, 3:], torch.zeros(2))
    if name == "ranknet":  # mean over all pairs: 3 + 10 pairs
        n_short, n_long = 3, 10
        expected = (
            ranknet_loss(short_scores, short_targets) * n_short + ranknet_loss(long_scores, long_targets) * n_long
        ) / (n_short + n_long)
    elif name == "adr-mse":  # mean over all 8 items
        expected = (adr_mse_loss(short_scores, short_targets) * 3 + adr_mse_loss(long_scores, long_targets) * 5) / 8
    else:  # mean over the 2 queries
        expected = (infonce_loss(short_scores, short_targets) + infonce_loss(long_scores, long_targets)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
