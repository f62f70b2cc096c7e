"""VAE+GAN networks: an MLP VAE whose decoder is also the generator, and a window critic.

For a batch of normalised windows ``x`` of shape ``(B, W)`` (missing points already 0) and a
boolean ``observed`` mask of the same shape (False = missing, injected or held out):

* **Encoder** ``q(z | x, m)``: ``[x ⊙ m; m] → hidden (tanh) ×2 → μ_z, log σ²_z``. The mask is
  an input, so a held-out point is known to be unknown rather than read as a 0. Scoring (and
  training) always hides the **last point**: its own value can never pull the reconstruction
  of the last point toward itself.
* **Decoder / generator** ``z → hidden (tanh) ×2 → x̂`` (``(B, W)`` means; the observation
  model is a fixed-variance Gaussian, i.e. masked MSE). The GAN's generator is this decoder,
  fed with prior draws ``z ~ N(0, I)`` or with posterior draws (reconstructions).
* **Critic** ``D(x, m)``: ``[x ⊙ m; m] → hidden (LeakyReLU 0.2) ×2 → 1 logit``, every Linear
  spectrally normalised (one power iteration per training step, none in eval mode). Higher
  logits mean "looks like a real window".

Every operation works row by row (no batch statistics, no reductions across windows), so a
window's outputs do not depend on the other windows in its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from app.detectors.base import PartsNetwork

#: Bounds of the encoder's log-variance (keeps exp() finite early in training).
LOGVAR_MIN, LOGVAR_MAX = -12.0, 6.0


def hide_last(observed: Tensor) -> Tensor:
    """A copy of ``observed`` with its last column set to False (the scored point held out).

    Examples
    --------
    >>> hide_last(torch.ones(1, 3, dtype=torch.bool)).tolist()
    [[True, True, False]]
    """
    out = observed.clone()
    out[..., -1] = False
    return out


def masked_input(x: Tensor, observed: Tensor) -> Tensor:
    """``[x ⊙ m; m]``, shape ``(B, 2W)``: hidden values become exactly 0, the mask rides along.

    ``torch.where`` (not a product) so that a NaN or inf at a hidden position cannot leak.
    """
    m = observed.to(x.dtype)
    return torch.cat((torch.where(observed, x, torch.zeros_like(x)), m), dim=-1)


class Encoder(nn.Module):
    """``q(z | x, m)``: ``[x ⊙ m; m] → hidden (tanh) ×2 → μ_z, log σ²_z``."""

    def __init__(self, window: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(2 * window, hidden_dim)
        self.hidden = nn.Linear(hidden_dim, hidden_dim)
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.inp(masked_input(x, observed)))
        h = torch.tanh(self.hidden(h))
        return self.mu(h), torch.clamp(self.logvar(h), LOGVAR_MIN, LOGVAR_MAX)


class Decoder(nn.Module):
    """``p(x | z)`` means and the GAN generator: ``z → hidden (tanh) ×2 → x̂`` (``W`` values)."""

    def __init__(self, window: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(latent_dim, hidden_dim)
        self.hidden = nn.Linear(hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, window)

    def _hidden(self, z: Tensor) -> Tensor:
        return torch.tanh(self.hidden(torch.tanh(self.inp(z))))

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self._hidden(z))

    def last_point(self, z: Tensor) -> Tensor:
        """The last point's mean only, shape ``(..., 1)`` (scoring needs no more)."""
        return F.linear(self._hidden(z), self.out.weight[-1:], self.out.bias[-1:])


class Critic(nn.Module):
    """``D(x, m)``: spectrally normalised MLP on ``[x ⊙ m; m]`` → one logit (high = real)."""

    def __init__(self, window: int, hidden_dim: int) -> None:
        super().__init__()
        self.inp = spectral_norm(nn.Linear(2 * window, hidden_dim))
        self.hidden = spectral_norm(nn.Linear(hidden_dim, hidden_dim))
        self.out = spectral_norm(nn.Linear(hidden_dim, 1))

    def forward(self, x: Tensor, observed: Tensor) -> Tensor:
        h = F.leaky_relu(self.inp(masked_input(x, observed)), 0.2)
        h = F.leaky_relu(self.hidden(h), 0.2)
        return self.out(h).squeeze(-1)


class VAEGANNetwork(PartsNetwork):
    """The whole VAE+GAN: encoder, decoder (= generator) and critic.

    Parameters
    ----------
    window
        W, the steps of a window (its last step is scored).
    latent_dim
        Size of the latent code.
    hidden_dim, critic_hidden_dim
        Width of the two hidden layers of the VAE, and of the critic.
    """

    #: Names of the sub-networks, one ``weights.pt`` entry each.
    PARTS = ("encoder", "decoder", "critic")

    def __init__(
        self, *, window: int, latent_dim: int, hidden_dim: int, critic_hidden_dim: int
    ) -> None:
        super().__init__()
        self.window = window
        self.latent_dim = latent_dim
        self.encoder = Encoder(window, hidden_dim, latent_dim)
        self.decoder = Decoder(window, hidden_dim, latent_dim)
        self.critic = Critic(window, critic_hidden_dim)

    def vae_parameters(self) -> list[nn.Parameter]:
        """Parameters of the VAE (encoder + decoder/generator), for the first optimizer."""
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def reconstruct(self, x: Tensor, observed: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """One reparameterised pass with the last point held out of the encoder.

        Parameters
        ----------
        x, observed
            ``(B, W)`` normalised windows and their mask (the last column is hidden here).
        eps
            ``(B, L)`` standard-normal draws: ``z = μ_z + σ_z · eps``.

        Returns
        -------
        dict
            ``x_hat`` (``(B, W)``), ``mu_z``, ``logvar_z``, ``z`` (``(B, L)``).
        """
        mu_z, logvar_z = self.encoder(x, hide_last(observed))
        z = mu_z + torch.exp(0.5 * logvar_z) * eps
        return {"x_hat": self.decoder(z), "mu_z": mu_z, "logvar_z": logvar_z, "z": z}

    def last_point_samples(self, x: Tensor, observed: Tensor, eps: Tensor) -> Tensor:
        """Reconstructions of the last point from ``S`` latent draws, shape ``(B, S)``.

        ``x`` is encoded with its last point hidden (set to 0 and masked), so the result does
        not depend on ``x[:, -1]``. ``eps`` has shape ``(B, S, L)``.
        """
        mu_z, logvar_z = self.encoder(x, hide_last(observed))
        z = mu_z.unsqueeze(1) + torch.exp(0.5 * logvar_z).unsqueeze(1) * eps
        return self.decoder.last_point(z).squeeze(-1)
