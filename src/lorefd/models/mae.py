"""Stage 1: the key-region masked autoencoder (Section III-B-2, Eq. 1).

A ViT encoder sees only the visible patches; a lighter decoder adds one shared learnable mask
token per masked patch, position embeddings for all patches, and predicts pixels. The loss is
the MSE over masked patches only. Images enter as ``[0, 1]`` floats and are normalised inside;
predictions are returned in the same ``[0, 1]`` space so reconstructions are real images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from lorefd.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info
from lorefd.config import ConfigError, MAEConfig, MaskConfig
from lorefd.data.keyregion import key_region_masking

log = logging.getLogger("lorefd")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``(grid * grid, dim)`` (as in MAE)."""
    if dim % 4:
        raise ConfigError(f"embedding dim {dim} must be a multiple of 4")
    coords = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def embed(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([embed(yy), embed(xx)], dim=1).float()


class KeyRegionMAE(nn.Module):
    """MAE-style ViT encoder/decoder trained on real faces with key-region masking."""

    def __init__(self, image_size: int, mae: MAEConfig, mask: MaskConfig) -> None:
        super().__init__()
        self.image_size = image_size
        self.patch_size = mask.patch_size
        self.mask_ratio = mask.mask_ratio
        self.random_fraction = mask.random_fraction
        self.norm_pix_loss = mae.norm_pix_loss
        self.patch_embed = PatchEmbed(image_size, mask.patch_size, 3, mae.encoder_dim)
        self.grid = image_size // mask.patch_size
        self.num_patches = self.grid**2

        # --- encoder ---
        self.cls_token = nn.Parameter(torch.zeros(1, 1, mae.encoder_dim))
        self.register_buffer("pos_embed", torch.cat([
            torch.zeros(1, mae.encoder_dim), sincos_pos_embed(mae.encoder_dim, self.grid)])[None],
            persistent=False)
        self.blocks = nn.ModuleList([
            Block(mae.encoder_dim, mae.encoder_heads, mae.mlp_ratio, qkv_bias=True)
            for _ in range(mae.encoder_depth)])
        self.norm = nn.LayerNorm(mae.encoder_dim, eps=1e-6)

        # --- decoder ---
        self.decoder_embed = nn.Linear(mae.encoder_dim, mae.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, mae.decoder_dim))
        self.register_buffer("decoder_pos_embed", torch.cat([
            torch.zeros(1, mae.decoder_dim), sincos_pos_embed(mae.decoder_dim, self.grid)])[None],
            persistent=False)
        self.decoder_blocks = nn.ModuleList([
            Block(mae.decoder_dim, mae.decoder_heads, mae.mlp_ratio, qkv_bias=True)
            for _ in range(mae.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(mae.decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(mae.decoder_dim, mask.patch_size**2 * 3)

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # T as a boolean indicator over patches; set from the dataset before training.
        self.register_buffer("key_patches", torch.zeros(self.num_patches, dtype=torch.bool))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_key_patches(self, patch_set: list[int]) -> None:
        """Store T (Section III-B-1) in the model so checkpoints carry it."""
        self.key_patches.zero_()
        if patch_set:
            self.key_patches[torch.as_tensor(patch_set, device=self.key_patches.device)] = True

    # ---- patches -------------------------------------------------------------------------
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, N, P*P*3)``."""
        p, g = self.patch_size, self.grid
        x = imgs.reshape(imgs.shape[0], 3, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(imgs.shape[0], g * g, p * p * 3)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, P*P*3)`` -> ``(B, 3, H, W)``."""
        p, g = self.patch_size, self.grid
        x = x.reshape(x.shape[0], g, g, p, p, 3)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], 3, g * p, g * p)

    def normalize(self, imgs: torch.Tensor) -> torch.Tensor:
        return (imgs - self.mean) / self.std

    def denormalize(self, imgs: torch.Tensor) -> torch.Tensor:
        return imgs * self.std + self.mean

    # ---- masking -------------------------------------------------------------------------
    def key_region_masking(self, batch: int, key: torch.Tensor | None = None,
                           generator: torch.Generator | None = None):
        """Masks per Section III-B-1; ``key`` overrides the dataset T with per-sample sets."""
        if key is None:
            key = self.key_patches.expand(batch, -1)
        return key_region_masking(key, self.mask_ratio, generator, self.random_fraction)

    # ---- encoder / decoder ---------------------------------------------------------------
    def forward_encoder(self, imgs: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Embed patches, keep the visible ones, run the Transformer blocks."""
        x = self.patch_embed(self.normalize(imgs)) + self.pos_embed[:, 1:]
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Append shared mask tokens, unshuffle, add position embeddings, predict pixels."""
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        tokens = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. (1): mean squared error over the masked patches only (normalised pixels)."""
        target = self.patchify(self.normalize(imgs))
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred.float() - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum().clamp_min(1)

    def forward(self, imgs: torch.Tensor, key: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                masking: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        """Training step: returns ``(loss, pred, mask)`` with ``pred`` in normalised space.

        ``masking`` = ``(ids_keep, mask, ids_restore)`` sampled beforehand (outside
        ``torch.compile``/DDP, see the stage-1 engine); otherwise masks are sampled here.
        """
        if masking is None:
            masking = self.key_region_masking(imgs.shape[0], key, generator)
        ids_keep, mask, ids_restore = masking
        latent = self.forward_encoder(imgs, ids_keep)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def pred_to_image(self, pred: torch.Tensor) -> torch.Tensor:
        """Decoder output ``(B, N, P*P*3)`` to a ``[0, 1]`` image (pixel targets only)."""
        return self.denormalize(self.unpatchify(pred.float())).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor, key: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Reconstruct ``imgs`` (``[0, 1]``) under key-region masking; stage 2 calls this frozen.

        Returns ``image``: the full reconstruction with visible patches pasted back from the
        input; ``pred``: the raw prediction of every patch as an image; ``mask``: ``(B, N)``,
        1 = masked.
        """
        ids_keep, mask, ids_restore = self.key_region_masking(imgs.shape[0], key, generator)
        pred = self.forward_decoder(self.forward_encoder(imgs, ids_keep), ids_restore)
        pred_img = self.pred_to_image(pred)
        pix_mask = self.mask_to_pixels(mask)
        image = imgs * (1 - pix_mask) + pred_img * pix_mask
        return {"image": image, "pred": pred_img, "mask": mask}

    def mask_to_pixels(self, mask: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` patch mask to a ``(B, 1, H, W)`` pixel mask."""
        g, p = self.grid, self.patch_size
        m = mask.reshape(-1, 1, g, 1, g, 1).expand(-1, 1, g, p, g, p)
        return m.reshape(-1, 1, g * p, g * p).to(torch.float32)


def build_mae(image_size: int, mae: MAEConfig, mask: MaskConfig) -> KeyRegionMAE:
    if image_size % mask.patch_size:
        raise ConfigError(f"image size {image_size} is not a multiple of patch {mask.patch_size}")
    return KeyRegionMAE(image_size, mae, mask)


def count_parameters(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{n / 1e6:.1f}M" if n >= 1e5 else str(n)


def resolve_mae_checkpoint(mae_ckpt: str | Path, image_size: int | None = None) -> Path:
    """The one resolver of ``--mae``: a checkpoint folder as is; a ``lorefd pretrain`` run
    folder resolves to ``RUN/best`` (the final model), or, while the run has none yet (still
    running, or stopped), to its resume point ``RUN/last`` with a warning; a run folder of
    the older layout likewise to ``RUN/mae``, else ``RUN/checkpoints/last``. Checked for kind
    and image size from its config alone (cheap: no weights are read)."""
    path = Path(mae_ckpt)
    if not (path / "config.json").is_file():
        # (folder, final?): this layout (lorefd.engines.common), then the older one
        for sub, final in (("best", True), ("last", False), ("mae", True),
                           ("checkpoints/last", False)):
            if (path / sub / "config.json").is_file():
                path = path / sub
                if not final:
                    log.warning("%s has no final best/ (the run has not finished): using its "
                                "resume point %s", mae_ckpt, path)
                break
    if not path.exists():
        raise CheckpointError(f"MAE checkpoint not found: {mae_ckpt}")
    if path.is_dir() and not (path / "config.json").is_file():
        raise CheckpointError(f"MAE checkpoint not found in {mae_ckpt}: no config.json, best/ "
                              "or last/ (nor an older run's mae/ or checkpoints/last/): not a "
                              "`lorefd pretrain` run folder or a checkpoint folder")
    mcfg, meta = read_checkpoint_info(path)
    if meta.get("kind") != "mae":
        raise CheckpointError(f"{mae_ckpt} holds a {meta.get('kind')!r} checkpoint, expected a "
                              "stage-1 'mae' checkpoint (from `lorefd pretrain`)")
    if image_size is not None and mcfg.data.image_size != image_size:
        raise CheckpointError(
            f"MAE checkpoint {mae_ckpt} was trained at {mcfg.data.image_size} px but the detector "
            f"config uses data.image_size={image_size}; use the same image size")
    return path


def load_mae(spec: str | Path, device: torch.device | str = "cpu", frozen: bool = True,
             image_size: int | None = None) -> KeyRegionMAE:
    """The one stage-1 loader: the MAE ``spec`` names (:func:`resolve_mae_checkpoint`: a
    checkpoint folder or a ``lorefd pretrain`` run) with its key patches T; frozen = eval
    mode, no gradients. ``checkpoint_info`` (``{"path", "config", "meta"}``) is what a
    detector stores of it, so that it rebuilds without the folder."""
    path = resolve_mae_checkpoint(spec, image_size)
    weights, mcfg, meta = load_checkpoint(path, kind="mae")
    model = build_mae(mcfg.data.image_size, mcfg.mae, mcfg.mask)
    model.load_state_dict(weights)
    if not bool(model.key_patches.any()):
        log.warning("MAE checkpoint %s has an empty key-patch set T; masking is purely random",
                    path)
    model.checkpoint_info = {"path": str(Path(path).resolve()), "config": mcfg.to_dict(),
                             "meta": meta}
    model.to(device)
    if frozen:
        model.eval().requires_grad_(False)
    return model


__all__ = ["KeyRegionMAE", "build_mae", "count_parameters", "load_mae",
           "resolve_mae_checkpoint", "sincos_pos_embed"]
