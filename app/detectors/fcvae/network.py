"""FCVAE networks: frequency conditioning (GFM + LFM) and the conditional encoder/decoder.

Follows DESIGN §5 (Wang et al., WWW 2024). For a batch of normalised windows ``x`` of shape
``(B, W)`` whose **last point is the one scored**:

* **GFM** — real FFT of the first ``W − 1`` points, real and imaginary parts concatenated →
  Linear → tanh → ``E`` features.
* **LFM** — the window with its last point set to 0, cut into sub-windows of ``k`` points
  with stride ``s`` (anchored so that the last sub-window ends at the last point), real FFT of
  each → Linear → tanh → one Transformer encoder layer (multi-head self-attention and a
  feed-forward block, each with a residual connection and LayerNorm) → Linear → tanh; the
  **last sub-window's** token gives ``E`` features.
* Condition ``c = [GFM; LFM]`` (``2E``), with dropout on ``c`` in training. Neither module sees
  the last value, so changing it never changes ``c``.
* Encoder ``[x; c] → hidden (tanh) ×2 → μ_z, σ²_z (softplus)``; decoder
  ``[z; c] → hidden (tanh) ×2 → μ_x, σ²_x (softplus)``; prior ``N(0, I)``.

The first layer of the encoder (decoder) is written as ``Linear(x) + Linear(c)``, which is the
same map as one Linear on ``[x; c]``; it lets scoring project ``c`` once per window instead of
once per MCMC round and latent draw.

Every operation works row by row (no batch statistics, no reductions across windows), so a
window's output does not depend on the other windows in its batch. ``softplus`` is computed
from ``exp``/``log1p`` because torch's fused softplus kernel can give a different last bit for
the same input depending on where it sits in the tensor (vectorised body vs scalar tail; found
while testing bitwise batch independence). The attention softmax is written out
(``row_softmax``): over 5 tokens it is ~5× faster than torch's kernel. The LFM's FFT of its
short sub-windows is written out too (``dft_features``): on an AVX-512 CPU ``torch.fft.rfft``
of them changed in the last bit between 1 and 2 threads, and so did the scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.detectors.base import PartsNetwork

LATENT_VAR_FLOOR = 1e-6


def stable_softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` computed as ``max(x, 0) + log1p(exp(-|x|))``.

    Element-for-element identical whatever the tensor's length or the element's position
    (torch's fused softplus is not), and free of overflow.

    Examples
    --------
    >>> round(float(stable_softplus(torch.tensor([0.0, 100.0]))[0]), 6) == round(math.log(2), 6)
    True
    """
    return torch.clamp(x, min=0.0) + torch.log1p(torch.exp(-torch.abs(x)))


def row_softmax(x: Tensor) -> Tensor:
    """Softmax over the last axis (a few elements here); ~5× faster than torch's kernel.

    Examples
    --------
    >>> bool(torch.allclose(row_softmax(torch.tensor([[0.0, 1.0]])).sum(-1), torch.ones(1)))
    True
    """
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def dft_basis(length: int) -> Tensor:
    """``(length, 2 * (length // 2 + 1))`` float32 matrix whose row ``j`` holds
    ``cos(2πjk/length)`` then ``-sin(2πjk/length)`` for ``k = 0 … length // 2`` (computed in
    float64): ``x @ basis`` is the real FFT of ``x``, real parts then imaginary parts.

    Examples
    --------
    >>> x = torch.randn(3, 23, dtype=torch.float64)
    >>> spectrum = torch.fft.rfft(x)
    >>> expected = torch.cat((spectrum.real, spectrum.imag), dim=-1)
    >>> bool(torch.allclose(x @ dft_basis(23).double(), expected, atol=1e-5))
    True
    """
    j = torch.arange(length, dtype=torch.float64)[:, None]
    k = torch.arange(length // 2 + 1, dtype=torch.float64)[None, :]
    angle = 2.0 * math.pi * ((j * k) % length) / length
    return torch.cat((torch.cos(angle), -torch.sin(angle)), dim=1).to(torch.float32)


def rfft_features(x: Tensor) -> Tensor:
    """Real FFT along the last axis, real and imaginary parts concatenated.

    A length-``m`` input gives ``2 * (m // 2 + 1)`` features.
    """
    spectrum = torch.fft.rfft(x, dim=-1)
    return torch.cat((spectrum.real, spectrum.imag), dim=-1)


def dft_features(x: Tensor, basis: Tensor) -> Tensor:
    """:func:`rfft_features` of a short last axis, as a sum of ``x[..., j] * basis[j]``
    taken in order, one elementwise multiply and one add at a time (``basis`` is
    :func:`dft_basis` of that length).

    Each feature is then rounded the same way whatever the thread count and wherever its
    row sits in the batch; ``torch.fft.rfft`` of the LFM's length-8 sub-windows is not (on
    an AVX-512 CPU its last bit changed between 1 and 2 threads), nor is a matrix product
    (its kernel may treat rows by position). Cheap for the few points of a sub-window.

    Examples
    --------
    >>> x = torch.randn(4, 5, 8)
    >>> bool(torch.allclose(dft_features(x, dft_basis(8)), rfft_features(x), atol=1e-5))
    True
    """
    out = x[..., 0:1] * basis[0]
    for j in range(1, basis.shape[0]):
        out = out + x[..., j : j + 1] * basis[j]
    return out


def n_rfft_features(length: int) -> int:
    """Number of features ``rfft_features`` gives for a length-``length`` input.

    Examples
    --------
    >>> n_rfft_features(23), n_rfft_features(8)
    (24, 10)
    """
    return 2 * (length // 2 + 1)


class GlobalFrequencyModule(nn.Module):
    """GFM: rFFT of the first ``W − 1`` points → Linear → tanh (``cond_dim`` features)."""

    def __init__(self, window: int, cond_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n_rfft_features(window - 1), cond_dim)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.proj(rfft_features(x[:, :-1])))


class TransformerEncoderLayer(nn.Module):
    """One post-norm Transformer encoder layer (self-attention + feed-forward).

    ``x ← LN(x + Drop(MHA(x)))``, then ``x ← LN(x + Drop(FF(x)))`` with ``FF = Linear → ReLU →
    Linear``. Written out with plain matmuls so that every window is computed by the same
    kernels whatever the batch size.
    """

    def __init__(self, dim: int, n_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"model dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm_attn = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, ff_dim)
        self.ff_out = nn.Linear(ff_dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, last_only: bool = False) -> Tensor:
        """``(B, T, D)`` → ``(B, T, D)``; with ``last_only`` just the last token, ``(B, 1, D)``.

        ``last_only`` computes the same function for the one token the LFM keeps: its query
        attends over every token's key and value, and only it goes through the norms and the
        feed-forward (about 3× faster for 41 tokens; equal up to float rounding).
        """
        b, t, d = x.shape
        h = self.n_heads
        if last_only:
            w, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, -1:], w[:d], bias[:d]).view(b, 1, h, d // h).transpose(1, 2)
            k, v = F.linear(x, w[d:], bias[d:]).view(b, t, 2, h, d // h).permute(2, 0, 3, 1, 4)
            residual, rows = x[:, -1:], 1
        else:
            q, k, v = self.qkv(x).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
            residual, rows = x, t
        weights = row_softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h))
        attended = (self.drop(weights) @ v).transpose(1, 2).reshape(b, rows, d)
        x = self.norm_attn(residual + self.drop(self.out(attended)))
        return self.norm_ff(x + self.drop(self.ff_out(F.relu(self.ff_in(x)))))


class LocalFrequencyModule(nn.Module):
    """LFM: per-sub-window rFFT → Linear → tanh → Transformer layer → Linear → tanh.

    The last point of the window is zeroed first; the output is the last sub-window's token.
    """

    def __init__(
        self,
        window: int,
        sub_window: int,
        stride: int,
        model_dim: int,
        ff_dim: int,
        n_heads: int,
        cond_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if not 2 <= sub_window <= window or stride < 1:
            raise ValueError(
                f"need 2 <= sub_window <= window and stride >= 1; got sub_window={sub_window}, "
                f"window={window}, stride={stride}"
            )
        self.sub_window = sub_window
        self.stride = stride
        # Skip the first few points so that the last sub-window ends exactly at the last point.
        self.offset = (window - sub_window) % stride
        self.n_tokens = (window - sub_window) // stride + 1
        self.embed = nn.Linear(n_rfft_features(sub_window), model_dim)
        self.basis: Tensor
        self.register_buffer("basis", dft_basis(sub_window), persistent=False)
        self.layer = TransformerEncoderLayer(model_dim, n_heads, ff_dim, dropout)
        self.proj = nn.Linear(model_dim, cond_dim)

    def forward(self, x: Tensor, *, last_only: bool = False) -> Tensor:
        """``(B, W)`` → ``(B, E)``; ``last_only`` runs the Transformer layer for the kept
        token only (scoring; training runs it for all tokens, as the reference does)."""
        masked = torch.cat((x[:, self.offset : -1], torch.zeros_like(x[:, -1:])), dim=1)
        subs = masked.unfold(1, self.sub_window, self.stride)  # (B, n_tokens, k)
        tokens = torch.tanh(self.embed(dft_features(subs, self.basis)))
        tokens = self.layer(tokens, last_only=last_only)
        return torch.tanh(self.proj(tokens[:, -1, :]))


class ConditionalEncoder(nn.Module):
    """q(z | x, c): ``[x; c] → hidden (tanh) ×2 → μ_z, σ²_z`` (softplus, floored at 1e-6)."""

    def __init__(self, window: int, cond_total: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.in_x = nn.Linear(window, hidden_dim)
        self.in_c = nn.Linear(cond_total, hidden_dim, bias=False)
        self.hidden = nn.Linear(hidden_dim, hidden_dim)
        self.head = nn.Linear(hidden_dim, 2 * latent_dim)  # [μ_z, raw σ²_z]

    def context(self, c: Tensor) -> Tensor:
        """The condition's share (plus bias) of the first pre-activation; computed once."""
        return self.in_c(c) + self.in_x.bias

    def from_context(self, x: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ_z, σ²_z)`` of windows ``x`` (``(B, W)``) given ``ctx = context(c)``."""
        h = torch.tanh(torch.addmm(ctx, x, self.in_x.weight.t()))
        out = self.head(torch.tanh(self.hidden(h)))
        mu, raw_var = out[:, : self.latent_dim], out[:, self.latent_dim :]
        return mu, stable_softplus(raw_var) + LATENT_VAR_FLOOR

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return self.from_context(x, self.context(c))


class ConditionalDecoder(nn.Module):
    """p(x | z, c): ``[z; c] → hidden (tanh) ×2 → μ_x, σ²_x`` (softplus + ``var_floor``)."""

    def __init__(
        self, window: int, cond_total: int, hidden_dim: int, latent_dim: int, var_floor: float
    ) -> None:
        super().__init__()
        self.var_floor = var_floor
        self.in_z = nn.Linear(latent_dim, hidden_dim)
        self.in_c = nn.Linear(cond_total, hidden_dim, bias=False)
        self.hidden = nn.Linear(hidden_dim, hidden_dim)
        self.mu = nn.Linear(hidden_dim, window)
        self.var = nn.Linear(hidden_dim, window)

    def context(self, c: Tensor) -> Tensor:
        """The condition's share (plus bias) of the first pre-activation; computed once."""
        return self.in_c(c) + self.in_z.bias

    def _hidden(self, z: Tensor, ctx: Tensor) -> Tensor:
        """Hidden features; ``ctx`` broadcasts against ``z``'s leading dimensions."""
        if z.dim() == 2 and ctx.shape == (z.shape[0], self.in_z.out_features):
            pre = torch.addmm(ctx, z, self.in_z.weight.t())
        else:
            pre = F.linear(z, self.in_z.weight) + ctx
        return torch.tanh(self.hidden(torch.tanh(pre)))

    def forward(self, z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        h = self._hidden(z, self.context(c))
        return self.mu(h), stable_softplus(self.var(h)) + self.var_floor

    def last_point_mean(self, z: Tensor, ctx: Tensor) -> Tensor:
        """μ_x of the last point only, shape ``(B, 1)`` (all an MCMC round needs)."""
        return F.linear(self._hidden(z, ctx), self.mu.weight[-1:], self.mu.bias[-1:])

    def last_point(self, z: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """μ_x and σ²_x of the last point only, each of shape ``z.shape[:-1]``."""
        weight = torch.cat((self.mu.weight[-1:], self.var.weight[-1:]))
        bias = torch.cat((self.mu.bias[-1:], self.var.bias[-1:]))
        out = F.linear(self._hidden(z, ctx), weight, bias)
        return out[..., 0], stable_softplus(out[..., 1]) + self.var_floor


class FCVAENetwork(PartsNetwork):
    """The whole FCVAE: condition (GFM + LFM), encoder and decoder.

    Parameters
    ----------
    window
        Window length W; the last point is the one scored.
    latent_dim, hidden_dim
        Latent size (8 in the paper) and width of the two hidden layers.
    cond_dim
        ``E``: features from each frequency module (``c`` has ``2E``).
    sub_window, stride
        LFM sub-window size ``k`` and stride ``s``.
    lfm_dim, lfm_ff_dim, n_heads
        LFM token width, feed-forward width and attention heads.
    dropout
        Dropout on ``c`` in training.
    attn_dropout
        Dropout inside the Transformer layer in training.
    var_floor
        Lower bound added to σ²_x (normalised units).
    """

    #: Names of the sub-networks, one ``weights.pt`` entry each.
    PARTS = ("gfm", "lfm", "encoder", "decoder")

    def __init__(
        self,
        *,
        window: int,
        latent_dim: int,
        hidden_dim: int,
        cond_dim: int,
        sub_window: int,
        stride: int,
        lfm_dim: int,
        lfm_ff_dim: int,
        n_heads: int,
        dropout: float,
        attn_dropout: float,
        var_floor: float,
    ) -> None:
        super().__init__()
        self.window = window
        self.latent_dim = latent_dim
        self.gfm = GlobalFrequencyModule(window, cond_dim)
        self.lfm = LocalFrequencyModule(
            window, sub_window, stride, lfm_dim, lfm_ff_dim, n_heads, cond_dim, attn_dropout
        )
        self.cond_dropout = nn.Dropout(dropout)
        self.encoder = ConditionalEncoder(window, 2 * cond_dim, hidden_dim, latent_dim)
        self.decoder = ConditionalDecoder(window, 2 * cond_dim, hidden_dim, latent_dim, var_floor)

    def condition(self, x: Tensor, *, last_only: bool = False) -> Tensor:
        """``c = [GFM(x); LFM(x)]``, shape ``(B, 2E)``; independent of ``x[:, -1]``.
        ``last_only``: see ``LocalFrequencyModule.forward``."""
        return torch.cat((self.gfm(x), self.lfm(x, last_only=last_only)), dim=-1)

    def forward(self, x: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """One reparameterised pass: ``z = μ_z + σ_z · eps`` with ``eps`` of shape ``(B, L)``.

        Returns ``mu_x``, ``var_x`` (``(B, W)``), ``mu_z``, ``var_z``, ``z`` (``(B, L)``).
        """
        c = self.cond_dropout(self.condition(x))
        mu_z, var_z = self.encoder(x, c)
        z = mu_z + torch.sqrt(var_z) * eps
        mu_x, var_x = self.decoder(z, c)
        return {"mu_x": mu_x, "var_x": var_x, "mu_z": mu_z, "var_z": var_z, "z": z}

    def last_point_samples(
        self, x: Tensor, eps_mcmc: Tensor, eps_samples: Tensor, *, mcmc_sample: bool = True
    ) -> tuple[Tensor, Tensor]:
        """MCMC imputation of the last point (DESIGN §5, mode 2), then latent draws.

        Parameters
        ----------
        x
            ``(B, W)`` normalised windows (missing points already 0).
        eps_mcmc
            ``(B, R, L)`` standard-normal draws, one row per MCMC round (``R`` may be 0).
        eps_samples
            ``(B, S, L)`` standard-normal draws for the final latent samples.
        mcmc_sample
            Sample ``z`` in the MCMC rounds (the reference); False uses ``μ_z``.

        Returns
        -------
        (mu, var)
            ``(B, S)`` decoder mean and variance of the last point, one column per draw
            ``z_s ~ q(z | x_mcmc, c)``; ``x_mcmc`` is ``x`` with only its last point replaced
            by the decoder's mean, ``R`` times. Evaluate the *original* last value under them.
        """
        c = self.condition(x, last_only=True)
        enc_ctx = self.encoder.context(c)
        dec_ctx = self.decoder.context(c)
        head = x[:, :-1]
        current = x
        for r in range(eps_mcmc.shape[1]):
            mu_z, var_z = self.encoder.from_context(current, enc_ctx)
            z = mu_z + torch.sqrt(var_z) * eps_mcmc[:, r, :] if mcmc_sample else mu_z
            current = torch.cat((head, self.decoder.last_point_mean(z, dec_ctx)), dim=1)
        mu_z, var_z = self.encoder.from_context(current, enc_ctx)
        z = mu_z.unsqueeze(1) + torch.sqrt(var_z).unsqueeze(1) * eps_samples  # (B, S, L)
        return self.decoder.last_point(z, dec_ctx.unsqueeze(1))
