"""Ranking losses for a list of student scores per query, as lightning-ir defines them.

All functions take `scores` and `targets` of shape [queries, list] and an optional boolean
`mask` of the same shape (False = padding: a query with fewer candidates than the list
size). Targets are gains, higher is better; teacher ranks r become gains `depth - r + 1`
(lightning-ir's RunDataset does the same), so only their order matters to these losses.

Checked against lightning-ir (webis-de/lightning-ir, `lightning_ir/loss/loss.py`, later
split into `loss/pairwise.py`, `loss/approximate.py`, `loss/listwise.py`, `loss/base.py`):

- RankNet: `binary_cross_entropy_with_logits(s_i - s_j, 1)` over every pair with
  target_i > target_j, averaged over all pairs of the batch (not per query first).
  lightning-ir's newer RankNet multiplies scores by a `temperature` (default 1) although
  the name suggests division; we have no temperature. With no pair at all lightning-ir
  returns NaN (mean of nothing); we return 0 (still part of the graph).
- ADR-MSE is lightning-ir's `ApproxRankMSE(discount="log2")` (lightning-ir's default is
  no discount): approximate rank p_i = 1 + sum_{j != i} sigmoid((s_j - s_i) / T), T = 1,
  true rank r_i = position of i when sorted by target (1 = best), loss = mean over all
  items of the batch of (p_i - r_i)^2 / log2(r_i + 1). lightning-ir's argsort is not
  stable, so tied targets get arbitrary ranks; ours breaks ties by list position.
- InfoNCE (`InfoNCE`, also `LocalizedContrastiveEstimation`): cross-entropy over the list
  with argmax(targets) as the class (the first maximum on ties), averaged over queries.
  No temperature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _full_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()


def ranknet_loss(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pairs (i above j in the targets) of -log sigmoid(s_i - s_j); 0 if there is no pair."""
    mask = _full_mask(scores, mask)
    above = (targets[:, :, None] > targets[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    q, i, j = torch.nonzero(above, as_tuple=True)
    if q.numel() == 0:
        return scores.sum() * 0.0  # no ordered pair: nothing to learn, but keep the graph
    margin = scores[q, i] - scores[q, j]
    return F.binary_cross_entropy_with_logits(margin, torch.ones_like(margin))


def approx_ranks(scores: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    """p_i = 1 + sum over the other valid items j of sigmoid((s_j - s_i) / temperature)."""
    mask = _full_mask(scores, mask)
    beats = torch.sigmoid((scores[:, None, :] - scores[:, :, None]) / temperature)  # [q, i, j] = s_j beats s_i
    others = mask[:, None, :] & ~torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
    return (beats * others).sum(-1) + 1


def target_ranks(targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each item by target (highest first); ties by list position, padding last."""
    mask = _full_mask(targets, mask)
    ordered = targets.float().masked_fill(~mask, float("-inf"))
    return torch.argsort(torch.argsort(ordered, dim=-1, descending=True, stable=True), dim=-1) + 1


def adr_mse_loss(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Approximate discounted rank MSE: mean over items of (p_i - r_i)^2 / log2(r_i + 1)."""
    mask = _full_mask(scores, mask)
    p = approx_ranks(scores, mask, temperature)
    r = target_ranks(targets, mask).to(p.dtype)
    per_item = (p - r) ** 2 / torch.log2(r + 1)
    return per_item[mask].mean()


def infonce_loss(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over each list with its highest-target item as the positive, mean over queries."""
    mask = _full_mask(scores, mask)
    positive = targets.float().masked_fill(~mask, float("-inf")).argmax(dim=-1)
    return F.cross_entropy(scores.masked_fill(~mask, float("-inf")), positive)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ranknet": ranknet_loss,
    "adr-mse": adr_mse_loss,
    "infonce": infonce_loss,
}
