"""The VAE+GAN training objectives as pure functions returning named terms.

VAE + generator (first optimizer), per batch of ``B`` windows of ``W`` points:

    recon = Σ_{b,w} m_bw (x_bw − x̂_bw)² / Σ_{b,w} m_bw          masked MSE (m = 0: missing)
    kl    = 1/B Σ_b Σ_l ½ (μ²_z,bl + σ²_z,bl − log σ²_z,bl − 1)    KL(q ‖ N(0, I)), nats/window
    adv   = generator term on decoded windows (hinge: −E[D(x̃)]; bce: E[softplus(−D(x̃))])
    loss  = recon + kl_weight · kl + adv_weight · adv

Critic (second optimizer), real windows ``x`` vs fakes ``x̃`` (decoded/sampled windows and,
optionally, real windows whose last point was shifted):

    hinge: critic = E[relu(1 − D(x))] + E[relu(1 + D(x̃))]
    bce:   critic = E[softplus(−D(x))] + E[softplus(D(x̃))]       (non-saturating GAN)

A fixed-variance Gaussian decoder makes ``recon`` the NLL up to a scale and a constant, so
``kl_weight`` plays the role of ``2 σ²_x / W``; it is passed in, never hard-coded.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

GanLoss = Literal["hinge", "bce"]


def masked_mse(x: Tensor, x_hat: Tensor, observed: Tensor) -> Tensor:
    """Mean squared error over the observed points only (0 when none is observed).

    Masked points contribute nothing, even when ``x`` holds NaN or inf there.

    Examples
    --------
    >>> x = torch.tensor([[1.0, float("nan")]])
    >>> float(masked_mse(x, torch.zeros(1, 2), torch.tensor([[True, False]])))
    1.0
    """
    sq = torch.where(observed, (torch.where(observed, x, x_hat.detach()) - x_hat) ** 2, 0.0)
    return sq.sum() / observed.sum().clamp(min=1).to(x_hat.dtype)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(μ, σ²) ‖ N(0, I))`` summed over latent dimensions, averaged over windows.

    Examples
    --------
    >>> float(gaussian_kl(torch.zeros(2, 8), torch.zeros(2, 8)))
    0.0
    """
    return (0.5 * (mu**2 + torch.exp(logvar) - logvar - 1.0)).sum(dim=-1).mean()


def critic_loss(real_logits: Tensor, fake_logits: Tensor, kind: GanLoss) -> Tensor:
    """The critic's loss: push real logits up and fake logits down.

    Examples
    --------
    >>> float(critic_loss(torch.tensor([2.0]), torch.tensor([-2.0]), "hinge"))
    0.0
    """
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    if kind == "bce":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; use 'hinge' or 'bce'")


def generator_loss(fake_logits: Tensor, kind: GanLoss) -> Tensor:
    """The generator's adversarial term: make the critic call decoded windows real.

    Examples
    --------
    >>> float(generator_loss(torch.tensor([1.0, 3.0]), "hinge"))
    -2.0
    """
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "bce":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; use 'hinge' or 'bce'")


def vae_objective(
    x: Tensor,
    x_hat: Tensor,
    observed: Tensor,
    mu_z: Tensor,
    logvar_z: Tensor,
    fake_logits: Tensor,
    *,
    kl_weight: float,
    adv_weight: float,
    kind: GanLoss,
) -> dict[str, Tensor]:
    """The VAE + generator loss and its terms for a batch.

    Parameters
    ----------
    x, x_hat, observed
        ``(B, W)`` inputs, reconstructions and the mask of points that count (False for
        missing or injected points).
    mu_z, logvar_z
        ``(B, L)`` posterior mean and log-variance.
    fake_logits
        Critic logits of decoded windows (gradients flow into the generator).
    kl_weight, adv_weight
        Multipliers of the KL term (annealed by the caller) and of the adversarial term.
    kind
        ``"hinge"`` or ``"bce"``.

    Returns
    -------
    dict
        ``loss`` (to minimise), ``recon``, ``kl`` and ``adv``: scalar tensors.
    """
    recon = masked_mse(x, x_hat, observed)
    kl = gaussian_kl(mu_z, logvar_z)
    adv = generator_loss(fake_logits, kind)
    return {"loss": recon + kl_weight * kl + adv_weight * adv, "recon": recon, "kl": kl, "adv": adv}
