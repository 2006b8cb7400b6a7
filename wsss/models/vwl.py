"""The VWL classifier (docs/method.md#vwl): hybrid pooling, visual-word assignment, VWL-L / VWL-M codebooks, CAM head.

Shapes: features F are N×ch×h×w (stage-4 output, stride 16), the codebook is K×ch, C is the number of foreground
classes. The networks (the methods that use them are in :mod:`wsss.methods`):
- :class:`VWLNet` with a learned codebook (nn.Parameter) and the decorrelation loss (VWL-L);
  L = L_cls + L_hist + L_word + L_dec.
- :class:`VWLNet` with ``memory_bank=True``: the codebook is a buffer moved towards the batch word centroids by
  :meth:`VWLNet.update_memory_bank` after each forward (VWL-M); L = L_cls + L_word (L_hist computed, logged only).
- :class:`CAMNet`: the IRN baseline, GAP logits and L_cls only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbone import ResNetStages


def hybrid_pool(x: torch.Tensor, gamma: float = 2.0, levels: Iterable[int] = (1, 2, 4)) -> torch.Tensor:
    """Hybrid pooling N×C×h×w → N×C: (γ·GAP + Σ_s M_s) / (γ + #levels).

    M_s is the mean of the maxima over the non-overlapping windows (⌊h/s⌋, ⌊w/s⌋) with stride = window and floor
    mode (rows/columns that do not fill a window are dropped). A map smaller than a level along a side (a small
    image at inference) uses windows of one pixel along that side: the level then sees every pixel, never fails.
    Training crops are checked to reach the largest level (``wsss.runtime.config.check_runs``)."""
    levels = tuple(int(s) for s in levels)
    h, w = x.shape[-2:]
    total = gamma * x.mean(dim=(2, 3))
    for s in levels:
        kh, kw = max(1, h // s), max(1, w // s)
        total = total + F.max_pool2d(x, (kh, kw), stride=(kh, kw)).mean(dim=(2, 3))
    return total / (gamma + len(levels))


class WordAssignment(NamedTuple):
    """Visual-word assignment of every pixel (docs/method.md#visual-words)."""

    soft: torch.Tensor  # N×K×h×w softmax over words of τ·cosine
    hard: torch.Tensor  # N×h×w int64 argmax word
    presence: torch.Tensor  # N×K float {0,1}: word used by at least one pixel
    histogram: torch.Tensor  # N×K sum of soft assignments over pixels


def word_assignment(feat: torch.Tensor, codebook: torch.Tensor, tau: float = 1.0) -> WordAssignment:
    """Assign pixels to words by cosine similarity of the detached, L2-normalised features to the normalised codebook.

    Gradients reach only the codebook (through ``soft`` and ``histogram``); computed in float32 even under autocast."""
    with torch.autocast(device_type=feat.device.type, enabled=False):
        f = F.normalize(feat.detach().float(), dim=1)
        b = F.normalize(codebook.float(), dim=1)
        sim = F.conv2d(f, b[:, :, None, None])
        soft = torch.softmax(tau * sim, dim=1)
        hard = sim.detach().argmax(dim=1)
        n, k = sim.shape[:2]
        presence = torch.zeros(n, k, device=feat.device, dtype=torch.float32)
        presence.scatter_(1, hard.flatten(1), 1.0)
        histogram = soft.sum(dim=(2, 3))
    return WordAssignment(soft, hard, presence, histogram)


def decorrelation_loss(codebook: torch.Tensor) -> torch.Tensor:
    """½(‖G‖_F − ‖diag G‖₂), G = B̄B̄ᵀ, B̄ = the codebook, rows centred (norms, not squared; docs/method.md#vwl-l)."""
    with torch.autocast(device_type=codebook.device.type, enabled=False):
        b = codebook.float().flatten(1)
        b = b - b.mean(dim=1, keepdim=True)
        gram = b @ b.t()
        return 0.5 * (torch.linalg.matrix_norm(gram) - torch.linalg.vector_norm(torch.diagonal(gram)))


def memory_bank_sums(feats: torch.Tensor, hard_words: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per word k: the sum of the raw (detached, float32) features of the pixels assigned to it (K×ch) and their
    number (K, float32). Sums over parts of a batch add up to the sums of the whole batch."""
    ch = feats.shape[1]
    x = feats.detach().float().permute(0, 2, 3, 1).reshape(-1, ch)
    idx = hard_words.reshape(-1).to(device=x.device, dtype=torch.long)
    sums = torch.zeros(k, ch, device=x.device, dtype=torch.float32).index_add_(0, idx, x)
    counts = torch.bincount(idx, minlength=k).to(torch.float32)
    return sums, counts


def memory_bank_blend(
    codebook: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor, rho: float = 1e-3
) -> torch.Tensor:
    """ρ·μ + (1−ρ)·B with the centroids μ_k = sums_k / (n_k + 1e-4) (see :func:`memory_bank_sums`)."""
    mu = sums / (counts[:, None] + 1e-4)
    return rho * mu.to(codebook.device) + (1.0 - rho) * codebook.float()


def memory_bank_update(
    codebook: torch.Tensor, feats: torch.Tensor, hard_words: torch.Tensor, rho: float = 1e-3
) -> torch.Tensor:
    """New codebook ρ·μ + (1−ρ)·B with μ_k = Σ_{w(p)=k} X_p / (n_k + 1e-4) over all batch pixels (raw features).

    Unused words have μ_k = 0 and so shrink by (1−ρ) (docs/method.md#vwl-m)."""
    return memory_bank_blend(codebook, *memory_bank_sums(feats, hard_words, codebook.shape[0]), rho)


def memory_bank_reinit(feats: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """K pixel feature vectors (K×ch) drawn uniformly with replacement from the batch's N·h·w pixels.

    The indices are drawn on the generator's device (CPU when ``generator`` is None)."""
    ch = feats.shape[1]
    x = feats.detach().float().permute(0, 2, 3, 1).reshape(-1, ch)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    idx = torch.randint(x.shape[0], (k,), generator=generator, device=gen_device)
    return x[idx.to(x.device)].clone()


def _mlsm(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.multilabel_soft_margin_loss(logits.float(), targets.float())


class CAMNet(nn.Module):
    """Classification network on a :class:`ResNetStages` backbone with a 1×1 classifier: the plain CAM baseline
    (GAP logits, L = L_cls). :class:`VWLNet` adds hybrid pooling and the visual words.

    ``loss_used`` names the loss terms that make up the training loss; the others are computed and logged only."""

    loss_used: tuple[str, ...] = ("cls",)

    def __init__(self, backbone: ResNetStages, num_classes: int, detach_stage2: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.detach_stage2 = bool(detach_stage2)
        ch = backbone.out_channels[-1]
        self.classifier = nn.Conv2d(ch, num_classes, 1, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Stage-4 features F (N×ch×h×w), stage 2 detached when ``detach_stage2``."""
        return self.backbone(x, detach_after=2 if self.detach_stage2 else None)

    def pool(self, feat: torch.Tensor) -> torch.Tensor:
        """The image-level pooling N×ch×h×w → N×ch of the training logits: GAP."""
        return feat.mean(dim=(2, 3))

    def logits(self, feat: torch.Tensor) -> torch.Tensor:
        """Image-level logits N×C of the classifier over :meth:`pool`."""
        return self.classifier(self.pool(feat)[:, :, None, None]).flatten(1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training forward. Keys: ``logits`` (N×C) and ``features``."""
        feat = self.features(x)
        return {"features": feat, "logits": self.logits(feat)}

    def loss_terms(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss term with its graph: ``cls``."""
        return {"cls": _mlsm(out["logits"], labels)}

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total over :attr:`loss_used`, detached parts of every term and ``total``)."""
        terms = self.loss_terms(out, labels)
        total = sum(terms[name] for name in self.loss_used)
        assert isinstance(total, torch.Tensor)
        parts = {name: value.detach() for name, value in terms.items()}
        parts["total"] = total.detach()
        return total, parts

    def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
        """CAMs N×C×h×w at the backbone's stride: ReLU of the classifier per pixel (docs/method.md#cam-head)."""
        return F.relu(F.conv2d(self.features(x), self.classifier.weight))

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_cam(x)

    def new_modules(self) -> list[nn.Module]:
        """Heads added on top of the backbone (trained with the 10× learning rate)."""
        return [self.classifier]

    def new_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside :meth:`new_modules` that train at the new layers' rate."""
        return []

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, new parameters), trainable ones only."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        new = [p for m in self.new_modules() for p in m.parameters() if p.requires_grad]
        return backbone, new + self.new_parameters()


class VWLNet(CAMNet):
    """The VWL classifier (see module docstring): hybrid pooling, word assignment, the histogram and word heads, and
    a codebook that is either learned (``memory_bank=False``, VWL-L: L = cls + hist + word + dec) or a memory bank
    moved by :meth:`update_memory_bank` (VWL-M: L = cls + word, hist logged only)."""

    def __init__(
        self,
        backbone: ResNetStages,
        num_classes: int,
        k_words: int = 256,
        gamma: float = 2.0,
        tau: float = 1.0,
        levels: Iterable[int] = (1, 2, 4),
        detach_stage2: bool | None = None,
        rho: float = 1e-3,
        memory_bank: bool = False,
    ) -> None:
        super().__init__(
            backbone, num_classes, detach_stage2=not memory_bank if detach_stage2 is None else bool(detach_stage2)
        )
        self.memory_bank = bool(memory_bank)
        self.k_words = k_words
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.levels = tuple(int(s) for s in levels)
        self.rho = float(rho)
        self.loss_used = ("cls", "word") if self.memory_bank else ("cls", "hist", "word", "dec")
        ch = backbone.out_channels[-1]
        self.fc_a = nn.Conv2d(k_words, num_classes, 1, bias=False)
        self.fc_b = nn.Conv2d(ch, k_words, 1, bias=False)
        codebook = torch.empty(k_words, ch)
        nn.init.kaiming_normal_(codebook, a=math.sqrt(5))
        if self.memory_bank:
            self.register_buffer("codebook", codebook)
            self.register_buffer("bank_updates", torch.zeros((), dtype=torch.long))
        else:
            self.codebook = nn.Parameter(codebook)

    def pool(self, feat: torch.Tensor) -> torch.Tensor:
        """Hybrid pooling (:func:`hybrid_pool`)."""
        return hybrid_pool(feat, self.gamma, self.levels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training forward. Keys: ``logits`` (N×C, hybrid pooling), ``features``, ``hist_logits`` (N×C),
        ``word_logits`` (N×K), ``word_labels`` (N×K presence), ``hard_words`` (N×h×w int64)."""
        out = super().forward(x)
        feat = out["features"]
        words = word_assignment(feat, self.codebook, self.tau)
        out["hist_logits"] = self.fc_a(words.histogram[:, :, None, None]).flatten(1)
        out["word_logits"] = self.fc_b(feat.mean(dim=(2, 3), keepdim=True)).flatten(1)
        out["word_labels"] = words.presence
        out["hard_words"] = words.hard
        return out

    def loss_terms(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cls``, ``hist``, ``word`` and, with a learned codebook, ``dec``."""
        terms = super().loss_terms(out, labels)
        terms["hist"] = _mlsm(out["hist_logits"], labels)
        terms["word"] = _mlsm(out["word_logits"], out["word_labels"])
        if not self.memory_bank:
            terms["dec"] = decorrelation_loss(self.codebook)
        return terms

    @torch.no_grad()
    def update_memory_bank(
        self, features: torch.Tensor, hard_words: torch.Tensor, generator: torch.Generator | None = None
    ) -> None:
        """VWL-M codebook step, after the forward and before backward (docs/method.md#vwl-m).

        The first call replaces the codebook by K pixel features sampled from this batch (the reference's
        update-then-overwrite); later calls apply :func:`memory_bank_update` with the hard word map of the forward."""
        if not self.memory_bank:
            raise RuntimeError("update_memory_bank is only for a memory-bank codebook (vwl_m)")
        if int(self.bank_updates) == 0:
            new = memory_bank_reinit(features, self.k_words, generator)
        else:
            new = memory_bank_update(self.codebook, features, hard_words, self.rho)
        self.set_codebook(new)

    @torch.no_grad()
    def set_codebook(self, new: torch.Tensor) -> None:
        """Replace the VWL-M memory bank by ``new`` (K×ch) and count the update."""
        if not self.memory_bank:
            raise RuntimeError("set_codebook is only for a memory-bank codebook (vwl_m)")
        self.codebook.copy_(new.to(self.codebook.device, self.codebook.dtype))
        self.bank_updates += 1

    def new_modules(self) -> list[nn.Module]:
        """classifier, fc_a, fc_b."""
        return [self.classifier, self.fc_a, self.fc_b]

    def new_parameters(self) -> list[nn.Parameter]:
        """The learned codebook (VWL-L); none for a memory bank."""
        return [] if self.memory_bank else [self.codebook]
