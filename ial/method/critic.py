"""Independency critic (authors' ``LatePairCriticsModel`` + ``GeometricGAN``), memory bank, hinge
losses.

The critic scores a PAIR of separated spectrograms: a shared conv encoder g (DCGAN
discriminator, 4×4 stride-2 convs, LeakyReLU) is applied to each spectrogram, an MLP h acts on the
concatenation, and a linear read-out w gives the score ``<w, h([g(x1), g(x2)])> + b``. g and h
carry spectral norm; ‖w‖² is penalised in the hinge loss (Geometric GAN).

- "dependent" pair: two components separated from the same mixture;
- "independent" pair: a component and a random past component from the memory bank. With
  ``pairs="label_matched"`` (our option, not the authors') the bank entry has the label of the
  component's dependent partner, so both kinds of pair have the same classes (see ``make_pairs``).

The critic learns s_ind ≥ +1, s_dep ≤ −1 (``critic_hinge_loss``); the separator minimises
``mean(s_ind) − mean(s_dep)`` (``separator_adversarial_loss``), i.e. makes its components from
one mixture look as unrelated as components of different mixtures.

Input transform (our choice; the authors feed their estimated magnitudes directly): a component
magnitude (256, T) on the log grid becomes ``log1p(magnitude)`` average-pooled to
``input_size`` (default 128×128), which makes the critic independent of T and keeps the bank
small (1000 × 128 × 128 float16 = 33 MB instead of 131 MB at 256×256; ``input_size: [256, 256]``
restores the paper's resolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


# How independent pairs are drawn from the bank (``IndependencyCritic.make_pairs``).
PAIRINGS = ("any", "label_matched")


class MemoryBank(nn.Module):
    """FIFO ring of past components, saved with the critic's state_dict (buffers) for exact resume.

    Buffers: ``data`` (size, F, T) float16, ``ptr`` (next slot), ``count`` (filled slots); with
    ``labelled``, also ``labels`` (size,) int64, each entry's class id.
    """

    def __init__(self, size: int, bins: int, frames: int, labelled: bool = False):
        super().__init__()
        self.size = size
        self.register_buffer("data", torch.zeros(size, bins, frames, dtype=torch.float16))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long)
                             if labelled else None)

    def __len__(self) -> int:
        return int(self.count)

    @torch.no_grad()
    def push(self, items: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Enqueue components (oldest overwritten), with their class ids in a labelled bank.
        Shape: items (M, F, T), labels (M,)."""
        if (labels is None) != (self.labels is None):
            raise ValueError("a labelled bank needs labels with its items, and only it takes them")
        items = items.detach()[-self.size:].to(self.data.dtype)
        m = items.shape[0]
        idx = ((int(self.ptr) + torch.arange(m)) % self.size).to(self.data.device)
        self.data[idx] = items.to(self.data.device)
        if labels is not None:
            self.labels[idx] = labels[-self.size:].to(self.labels.device, torch.long)
        self.ptr.fill_((int(self.ptr) + m) % self.size)
        self.count.fill_(min(int(self.count) + m, self.size))

    def sample(self, n: int, generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` random stored components (with replacement). With ``labels`` (n,) (a labelled
        bank), the i-th is drawn among the entries of class ``labels[i]``, or among all entries
        while the bank holds none of that class. Shape: → (n, F, T) float32."""
        if len(self) == 0:
            raise RuntimeError("the memory bank is empty")
        if labels is None:
            idx = torch.randint(len(self), (n,), generator=generator)
        else:
            stored = self.labels[:len(self)].cpu()
            weights = (stored.view(1, -1) == labels.cpu().view(-1, 1)).float()  # (n, count)
            weights[weights.sum(1) == 0] = 1.0
            idx = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        return self.data[idx.to(self.data.device)].float()


def _dcgan_encoder(size: tuple[int, int], ndf: int) -> tuple[nn.Sequential, int]:
    """DCGAN discriminator trunk (authors' g): (M, 1, F, T) → (M, C). Returns (module, C)."""
    layers: list[nn.Module] = [spectral_norm(nn.Conv2d(1, ndf, 4, 2, 1, bias=False)),
                               nn.LeakyReLU(0.2)]
    csize, c = min(size) // 2, ndf
    while csize > 4:
        out = min(c * 2, 1024)
        layers += [spectral_norm(nn.Conv2d(c, out, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2)]
        csize //= 2
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), c


class IndependencyCritic(nn.Module):
    """Pair critic with its memory bank (``.bank``, so the critic's engine saves it).

    ``forward(pairs)`` scores pairs: (P, 2, F', T') critic inputs → (P,) scores.
    """

    def __init__(self, input_size: tuple[int, int] = (128, 128), ndf: int = 64,
                 bank_size: int = 1000, pairs: str = "any"):
        super().__init__()
        if pairs not in PAIRINGS:
            raise ValueError(f"pairs must be one of {PAIRINGS}, not {pairs!r}")
        self.pairs = pairs
        self.input_size = tuple(input_size)
        self.g, c = _dcgan_encoder(self.input_size, ndf)
        self.h = nn.Sequential(spectral_norm(nn.Linear(2 * c, c)), nn.LeakyReLU(0.2),
                               spectral_norm(nn.Linear(c, c)), nn.LeakyReLU(0.2))
        self.w = nn.Linear(c, 1, bias=False)
        self.b = nn.Parameter(torch.zeros(1))
        self.bank = MemoryBank(bank_size, *self.input_size, labelled=pairs == "label_matched")

    def prepare(self, components: torch.Tensor) -> torch.Tensor:
        """Separated magnitudes → critic inputs (log1p, average-pooled to ``input_size``).

        Shape: (B, N, 256, T) → (B, N, F', T').
        """
        B, N = components.shape[:2]
        x = torch.log1p(components.clamp_min(0).flatten(0, 1).unsqueeze(1))
        x = F.adaptive_avg_pool2d(x, self.input_size)
        return x.reshape(B, N, *self.input_size)

    def remember(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Push prepared components into the bank, with their class ids when pairs are
        label-matched (which needs them). Shape: x (B, N, F', T'), labels (B, N)."""
        matched = self.pairs == "label_matched" and labels is not None
        self.bank.push(x.flatten(0, 1), labels.flatten() if matched else None)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        P = pairs.shape[0]
        feats = self.g(pairs.flatten(0, 1).unsqueeze(1)).reshape(P, -1)  # (P, 2C)
        return (self.w(self.h(feats)) + self.b).squeeze(1)

    def make_pairs(self, x: torch.Tensor, generator: torch.Generator | None = None,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Dependent and independent pairs from prepared components (authors' PairSampleModule).

        Dependent: each component with another component (random, ≠ itself) of its own mixture.
        Independent: each component with a random bank entry; while the bank is empty, with the
        component at the same slot of the previous mixture in the batch (another mixture, hence
        independent sources; with one mixture, the component reversed in time).

        ``pairs="label_matched"`` needs ``labels``, each component's class id: the bank entry
        then has the class of the component's dependent partner. Mixtures group clips of
        DIFFERENT classes, so with "any" (the authors') a dependent pair never shares a class
        while ~1 independent pair in n_classes does, and the critic can tell the two kinds
        apart by the classes alone instead of by what one component leaks into the other.

        Shape: x (B, N, F', T'), N ≥ 2, labels (B, N) → (dependent (B·N, 2, F', T'),
        independent (B·N, 2, F', T')).
        """
        B, N = x.shape[:2]
        if N < 2:
            raise ValueError("dependent pairs need at least two components per mixture")
        shift = torch.randint(1, N, (B, N), generator=generator).to(x.device)
        partner = (torch.arange(N, device=x.device).view(1, N) + shift) % N  # (B, N)
        other = torch.gather(x, 1, partner[:, :, None, None].expand_as(x))
        dependent = torch.stack([x, other], dim=2).flatten(0, 1)
        flat = x.flatten(0, 1)
        wanted = None
        if self.pairs == "label_matched":
            if labels is None:
                raise ValueError("label_matched pairs need the components' labels")
            wanted = torch.gather(labels.to(partner.device), 1, partner).flatten()
        if len(self.bank) > 0:
            past = self.bank.sample(flat.shape[0], generator, wanted).to(flat.device, flat.dtype)
        else:
            past = (x.roll(1, dims=0) if B > 1 else x.flip(-1)).flatten(0, 1)
        independent = torch.stack([flat, past], dim=1)
        return dependent, independent


def critic_hinge_loss(critic: IndependencyCritic, s_dep: torch.Tensor, s_ind: torch.Tensor,
                      c: float = 1.0) -> torch.Tensor:
    """Geometric-GAN (SVM) critic loss: ‖w‖² + C·(mean relu(1 − s_ind) + mean relu(1 + s_dep)).

    Shape: s_dep (P,), s_ind (Q,) → ().
    """
    return (critic.w.weight.pow(2).sum()
            + c * (F.relu(1 - s_ind).mean() + F.relu(1 + s_dep).mean()))


def separator_adversarial_loss(s_dep: torch.Tensor, s_ind: torch.Tensor) -> torch.Tensor:
    """The separator's independency term: mean(s_ind) − mean(s_dep) (the critic's estimate of
    the distance between independent and dependent pairs). Shape: (P,), (Q,) → ()."""
    return s_ind.mean() - s_dep.mean()
