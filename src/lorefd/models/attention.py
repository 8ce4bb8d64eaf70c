"""Feature-level local difference attention maps (Section III-C, Eq. 2, Fig. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def local_difference_attention(f_input: torch.Tensor, f_recon: torch.Tensor,
                               eps: float = 1e-8) -> torch.Tensor:
    """Eq. (2): ``1 - (1 + cos(f^s, f^r)) / 2`` with the cosine over channels at each location.

    ``f_input``, ``f_recon``: ``(B, C, h, w)`` features of the input and its reconstruction.
    Returns ``(B, 1, h, w)`` in ``[0, 1]``: 0 where the features agree, 1 where they are opposite.
    Computed in float32 (bf16 cosines are too coarse for maps close to 0).
    """
    if f_input.shape != f_recon.shape:
        raise ValueError(f"feature shapes differ: {tuple(f_input.shape)} vs {tuple(f_recon.shape)}")
    cos = F.cosine_similarity(f_input.float(), f_recon.float(), dim=1, eps=eps)
    return (1.0 - (1.0 + cos) / 2.0).clamp_(0.0, 1.0).unsqueeze(1)


def attention_maps(feats_input: dict[str, torch.Tensor], feats_recon: dict[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
    """Eq. (2) for every layer: ``{layer: (B, 1, h, w)}``."""
    return {k: local_difference_attention(feats_input[k], feats_recon[k]) for k in feats_input}


__all__ = ["attention_maps", "local_difference_attention"]
