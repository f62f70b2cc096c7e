"""The FCVAE training objective (CM-ELBO) as pure functions returning named terms.

CM-ELBO (DESIGN §5): the Gaussian negative log-likelihood of each point is weighted by
``α`` (0 for missing or injected-anomalous points, else 1) and the prior term of the KL by
``β`` = share of usable points in the window:

    nll  = 1/(B·W) Σ_{b,w} α_bw · ½ (log 2π + log σ²_x,bw + (x_bw − μ_x,bw)² / σ²_x,bw)
    kl   = 1/(B·L) Σ_{b,l} ½ (β_b (μ²_z,bl + σ²_z,bl) − log σ²_z,bl − 1)
    loss = nll + w_KL · kl

Both terms are averaged over points (latent dimensions) and windows, as the reference
implementation does; masked points count in the average with weight 0. The KL is the
closed form of ``E_q[log q(z|x) − β log p(z)]`` (up to a constant), so with ``β = 1`` it is
the usual ``KL(q ‖ N(0, I))``. ``w_KL`` (annealing) is passed in, never hard-coded.

With ``β < 1`` that term is not a divergence and can be negative, so the terms also carry
``kl_exact`` = ``KL(q ‖ N(0, I))`` (never negative): training logs and curves show it, the
loss still uses the β-weighted term.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(x: Tensor, mu: Tensor, var: Tensor) -> Tensor:
    """Element-wise negative log-density of ``x`` under ``N(mu, var)``.

    Examples
    --------
    >>> round(float(gaussian_nll(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0))), 4)
    0.9189
    """
    return 0.5 * (LOG_2PI + torch.log(var) + (x - mu) ** 2 / var)


def cm_elbo(
    x: Tensor,
    mu_x: Tensor,
    var_x: Tensor,
    mu_z: Tensor,
    var_z: Tensor,
    alpha: Tensor,
    *,
    kl_weight: float,
) -> dict[str, Tensor]:
    """The CM-ELBO loss and its terms for a batch.

    Parameters
    ----------
    x, mu_x, var_x
        ``(B, W)`` inputs and the decoder's mean and variance.
    mu_z, var_z
        ``(B, L)`` posterior mean and variance.
    alpha
        ``(B, W)`` point weights: 1 for usable points, 0 for missing or injected ones. Masked
        points contribute nothing (even when ``x`` holds NaN or inf there).
    kl_weight
        Multiplies the KL term (KL annealing: 0 → 1 over the first epochs).

    Returns
    -------
    dict
        ``loss`` (to minimise), ``nll``, ``kl`` (the β-weighted term in the loss) and
        ``kl_exact`` (``KL(q ‖ N(0, I))``, for logs): scalar tensors.
    """
    alpha = alpha.to(mu_x.dtype)
    usable = alpha > 0
    safe_x = torch.where(usable, x, mu_x.detach())
    per_point = torch.where(usable, alpha * gaussian_nll(safe_x, mu_x, var_x), 0.0)
    nll = per_point.mean(dim=1).mean()
    beta = alpha.mean(dim=1, keepdim=True)
    log_var = torch.log(var_z)
    kl = (0.5 * (beta * (mu_z**2 + var_z) - log_var - 1.0)).mean(dim=1).mean()
    kl_exact = (0.5 * (mu_z**2 + var_z - log_var - 1.0)).mean(dim=1).mean()
    return {"loss": nll + kl_weight * kl, "nll": nll, "kl": kl, "kl_exact": kl_exact}
