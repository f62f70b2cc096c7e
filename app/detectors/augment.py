"""Batch augmentation for training (DESIGN §5), pure functions of a torch.Generator.

Windows are normalised, shape ``(B, W)``; ``usable`` is a boolean mask of the same shape
(False = missing or injected, i.e. ``α = 0`` in the loss). Each mutation returns new tensors
and masks out exactly the points it changed:

* ``value_mutation`` — copies of ≈5% of the windows whose **last point** moves by
  ``±U(0.5, 10)`` (normalised units, i.e. σ of the training series); that point is masked.
* ``pattern_mutation`` — copies of ≈10% of the windows whose tail (from a random start on)
  is swapped for another window's tail; **only the swapped points** are masked (the
  reference implementation masks those positions in every window of the batch — a bug).
* ``missing_injection`` — ≈1% of all points set to 0 and masked.

``augment_batch`` (FCVAE's recipe) appends the value- and pattern-mutated copies to the
batch (as the reference does: the originals stay) and then injects missing points into the
whole batch.
Random numbers are drawn on the generator's device (CPU) and moved to the batch's device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _n_copies(rate: float, batch: int) -> int:
    return round(rate * batch) if batch > 1 else 0


def value_mutation(
    x: Tensor,
    usable: Tensor,
    rate: float,
    generator: torch.Generator,
    *,
    min_shift: float = 0.5,
    max_shift: float = 10.0,
) -> tuple[Tensor, Tensor]:
    """Copies of ``round(rate · B)`` random windows with a shifted, masked last point.

    The shift is ``±U(min_shift, max_shift)`` (sign and size drawn per copy).

    Returns
    -------
    (x_aug, usable_aug)
        The new windows only (``(n, W)``; ``n`` may be 0).
    """
    n = _n_copies(rate, x.shape[0])
    dev = generator.device
    idx = torch.randint(0, x.shape[0], (n,), generator=generator, device=dev).to(x.device)
    size = torch.rand(n, generator=generator, device=dev, dtype=x.dtype)
    sign = torch.randint(0, 2, (n,), generator=generator, device=dev).to(x.dtype) * 2 - 1
    shift = (sign * (min_shift + (max_shift - min_shift) * size)).to(x.device)
    x_aug, usable_aug = x[idx].clone(), usable[idx].clone()
    x_aug[:, -1] += shift
    usable_aug[:, -1] = False
    return x_aug, usable_aug


def pattern_mutation(
    x: Tensor,
    usable: Tensor,
    rate: float,
    generator: torch.Generator,
    *,
    min_start: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Copies of ``round(rate · B)`` windows whose tail comes from another window.

    For each copy a donor window (always a different row) and a start ``t`` in
    ``[min_start, W − 1]`` are drawn (``min_start`` defaults to ``max(1, W // 4)``); points
    ``t … W − 1`` are taken from the donor and masked, the rest keep their value and mask.

    Returns
    -------
    (x_aug, usable_aug)
        The new windows only (``(n, W)``; ``n`` may be 0).
    """
    b, w = x.shape
    n = _n_copies(rate, b)
    lo = max(1, w // 4) if min_start is None else min_start
    if not 1 <= lo <= w - 1:
        raise ValueError(f"min_start must lie in [1, {w - 1}]; got {lo}")
    dev = generator.device
    idx = torch.randint(0, b, (n,), generator=generator, device=dev)
    donor = (idx + torch.randint(1, max(b, 2), (n,), generator=generator, device=dev)) % b
    start = torch.randint(lo, w, (n, 1), generator=generator, device=dev)
    swapped = (torch.arange(w, device=dev).unsqueeze(0) >= start).to(x.device)
    idx, donor = idx.to(x.device), donor.to(x.device)
    x_aug = torch.where(swapped, x[donor], x[idx])
    usable_aug = usable[idx] & ~swapped
    return x_aug, usable_aug


def missing_injection(
    x: Tensor, usable: Tensor, rate: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Set each point to 0 with probability ``rate`` and mask it (returns new tensors)."""
    hit = (torch.rand(x.shape, generator=generator, device=generator.device) < rate).to(x.device)
    return torch.where(hit, torch.zeros_like(x), x), usable & ~hit


def augment_batch(
    x: Tensor,
    usable: Tensor,
    generator: torch.Generator,
    *,
    value_rate: float,
    pattern_rate: float,
    missing_rate: float,
    value_min_shift: float = 0.5,
    value_max_shift: float = 10.0,
) -> tuple[Tensor, Tensor]:
    """Append value- and pattern-mutated copies, then inject missing points everywhere.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x, ok = augment_batch(torch.randn(100, 24), torch.ones(100, 24, dtype=torch.bool), g,
    ...                       value_rate=0.05, pattern_rate=0.1, missing_rate=0.01)
    >>> tuple(x.shape)  # 100 originals + 5 value- + 10 pattern-mutated copies
    (115, 24)
    """
    parts_x, parts_ok = [x], [usable]
    if value_rate > 0:
        vx, vok = value_mutation(
            x, usable, value_rate, generator, min_shift=value_min_shift, max_shift=value_max_shift
        )
        parts_x.append(vx)
        parts_ok.append(vok)
    if pattern_rate > 0:
        px, pok = pattern_mutation(x, usable, pattern_rate, generator)
        parts_x.append(px)
        parts_ok.append(pok)
    x_all, ok_all = torch.cat(parts_x), torch.cat(parts_ok)
    if missing_rate > 0:
        x_all, ok_all = missing_injection(x_all, ok_all, missing_rate, generator)
    return x_all, ok_all
