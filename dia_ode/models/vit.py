"""Vision Transformer whose encoder is one residual stage: an Euler solver over depth in two sub-steps.

Follows "An Image is Worth 16x16 Words" (Dosovitskiy et al., arXiv 2010.11929) with pre-LN blocks,
read as in "Understanding and Improving Transformer From a Multi-Particle Dynamic System Point of
View" (Lu et al., arXiv 1906.02762): a block is the Lie–Trotter splitting of one step of
dx/dt = F_attn(x) + F_mlp(x) into two Euler sub-steps, x <- x + h^a ⊙ MHSA(LN(x)), then
x <- x + h^m ⊙ MLP(LN(x)), with a per-channel step h chosen by the encoder's controller (constant,
SE, ECA, shared SAM or one DIA cell). Small-image defaults: mean pooling over tokens (no class token,
as in Beyer et al., "Better plain ViT baselines", arXiv 2205.01580), so every token is a patch and the
encoder output reshapes to a (B, C, H/p, W/p) map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dia_ode.attention.registry import ATTENTIONS
from dia_ode.models.backbone import AbstractBackbone, FeatureInfo
from dia_ode.models.registry import DETECTION_READY, register_model
from dia_ode.solvers.controllers import AbstractStageController, create_stage_controller
from dia_ode.solvers.interleaved import AlternatingStageController
from dia_ode.solvers.stage import AbstractBlock, ResidualStage

# CBAM's spatial gate (and a DIA/shared unit with sam="cbam") needs an image grid, not tokens.
VIT_ATTENTIONS = tuple(name for name in ATTENTIONS if name != "cbam")

# The ViT recipe: AdamW, linear warm-up then cosine decay per step. Tuned for dia_vit_tiny on digits
# (8x8, 1294 training images, 2 CPU cores): batch 128 halves the per-step overhead that dominates such
# small tensors, so 150 epochs take ~67 s at test accuracy ~0.97 (theory/vit.md, experiments/README.md E3).
VIT_RECIPE = {"optimizer": "adamw", "schedule": "warmup_cosine", "lr": 5e-3, "weight_decay": 0.05,
              "warmup_epochs": 5, "epochs": 150, "batch_size": 128}


def default_patch_size(image_size: int) -> int:
    """The largest of 4, 2, 1 that divides image_size and leaves a grid of at least 4 x 4 patches
    (8x8 digits -> 2, 28x28 -> 4, 32x32 -> 4): a few patches of a small image leave no sequence."""
    for p in (4, 2):
        if image_size % p == 0 and image_size // p >= 4:
            return p
    return 1


class SelfAttentionStep(AbstractBlock):
    """First sub-step of a block: f(x) = MHSA(LN(x)), tokens (B, N, C) -> (B, N, C); skip = x.

    Args:
        dim: C, the embedding width.
        heads: number of attention heads (C must be divisible by it).
        dropout: dropout on the attention weights and on the output projection.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(self.norm(x)).view(B, N, 3, self.heads, C // self.heads)  # (B, N, 3, nh, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, N, d) each
        # Fused kernel on CPU; it has no forward-mode AD, so stiffness/network.py selects the math backend.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj_drop(self.proj(y))  # (B, N, C)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MLPStep(AbstractBlock):
    """Second sub-step of a block: f(x) = W2 GELU(W1 LN(x)), tokens (B, N, C) -> (B, N, C); skip = x.

    Args:
        dim: C, the embedding width.
        hidden: width of the hidden layer (mlp_ratio * C).
        dropout: dropout after the hidden layer and on the output.
    """

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        y = self.drop(F.gelu(self.fc1(self.norm(x))))  # (B, N, hidden)
        return self.drop(self.fc2(y))  # (B, N, C)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x


def encoder_controller(attention: str, dim: int, depth: int, split_controller: bool = False,
                       **attention_options) -> AbstractStageController:
    """The step-size controller of an encoder of `depth` blocks = 2 * depth sub-steps.

    By default one controller serves every sub-step (for "dia": ONE cell for the whole encoder,
    attention and MLP sub-steps alike, DIA's one-module-per-stage rule). With split_controller the
    attention sub-steps (k even) and the MLP sub-steps (k odd) get one controller each, with
    separate states (solvers.AlternatingStageController); for "se"/"eca" this only re-indexes the same
    2 * depth modules, for "none" it changes nothing.
    """
    if attention not in VIT_ATTENTIONS:
        raise ValueError(f"attention '{attention}' is not available for ViT; valid: {', '.join(VIT_ATTENTIONS)}")
    if attention_options.get("sam") == "cbam":
        raise ValueError("sam='cbam' is not available for ViT: CBAM's spatial gate needs images, not tokens; "
                         "valid: se, eca")
    if not split_controller:
        return create_stage_controller(attention, dim, 2 * depth, **attention_options)
    return AlternatingStageController([create_stage_controller(attention, dim, depth, **attention_options)
                                  for _ in ("attention", "mlp")])


class VisionTransformer(AbstractBackbone):
    """Patch embedding + position embedding -> one residual stage of 2 * depth sub-steps -> LN ->
    mean over tokens -> linear.

    Args:
        attention: controller name ("none", "se", "eca", "shared", "dia"; not "cbam").
        num_classes: size of the head.
        in_channels: input channels.
        image_size: H = W of the inputs the position embedding is sized for; other sizes divisible
            by the patch get a bicubically interpolated embedding.
        patch_size: side p of the square patches (conv with kernel = stride = p); None picks
            default_patch_size(image_size).
        dim: C, the embedding width.
        depth: number of Transformer blocks (each is two sub-steps).
        heads: attention heads.
        mlp_ratio: MLP hidden width / C.
        dropout: dropout rate in embeddings, attention and MLP (0 disables).
        split_controller: one controller for attention and one for MLP sub-steps (see
            encoder_controller) instead of one for all.
        **attention_options: passed to solvers.create_stage_controller (e.g. reduction, sam).
    """

    def __init__(self, attention: str = "none", num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, patch_size: int | None = None, dim: int = 64, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0, split_controller: bool = False,
                 **attention_options) -> None:
        super().__init__()
        patch_size = default_patch_size(image_size) if patch_size is None else patch_size
        if image_size < 1 or patch_size < 1 or image_size % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide the image size (image_size={image_size})")
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"dim={dim} must be a positive multiple of heads={heads}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid ** 2, dim))  # (1, N, C)
        self.pos_drop = nn.Dropout(dropout)
        hidden = max(1, round(mlp_ratio * dim))
        steps = [step for _ in range(depth)
                 for step in (SelfAttentionStep(dim, heads, dropout), MLPStep(dim, hidden, dropout))]
        controller = encoder_controller(attention, dim, depth, split_controller, **attention_options)
        self.encoder = ResidualStage(steps, controller, post=None)  # pre-LN: nothing after the add
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.feature_info = [FeatureInfo("encoder", dim, patch_size)]
        self._init_weights()

    def _init_weights(self) -> None:
        # ViT's: truncated normal (std 0.02) for linear layers and position embedding, zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("encoder.controller"):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def position_embedding(self, gh: int, gw: int) -> torch.Tensor:
        """The learned embedding for a gh x gw patch grid: (1, N, C), interpolated if the grid differs."""
        if (gh, gw) == (self.grid, self.grid):
            return self.pos_embed
        grid = self.pos_embed.transpose(1, 2).reshape(1, -1, self.grid, self.grid)  # (1, C, g, g)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)  # (1, C, gh, gw)
        return grid.flatten(2).transpose(1, 2)  # (1, gh * gw, C)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images (B, C_in, H, W) -> tokens (B, N, C) and the patch grid (H/p, W/p)."""
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"patch_size={self.patch_size} must divide the image size {H}x{W}")
        z = self.patch_embed(x)  # (B, C, H/p, W/p)
        gh, gw = z.shape[-2:]
        z = z.flatten(2).transpose(1, 2)  # (B, N, C)
        return self.pos_drop(z + self.position_embedding(gh, gw)), (gh, gw)

    classifier_only = ("head", "norm")  # forward_stages reads the encoder's tokens before the final norm

    def forward_stages(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        z, (gh, gw) = self.embed(x)
        z = self.encoder(z)  # (B, N, C)
        return [z.transpose(1, 2).reshape(z.shape[0], -1, gh, gw)]  # (B, C, H/p, W/p)

    def forward_features(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        z, _ = self.embed(x)
        return self.norm(self.encoder(z))  # (B, N, C)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=1))  # (B, num_classes)


# name -> (dim, depth, heads, mlp_ratio): sized for 8x8 to 32x32 inputs on a CPU.
VIT_SIZES = {
    "vit_tiny": (64, 4, 4, 2.0),
    "vit_small": (128, 6, 4, 2.0),
}


def _register(name: str, dim: int, depth: int, heads: int, mlp_ratio: float) -> None:
    def build(attention: str = "none", num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
              patch_size: int | None = None, dim: int = dim, depth: int = depth, heads: int = heads,
              mlp_ratio: float = mlp_ratio, dropout: float = 0.0, split_controller: bool = False,
              **attention_options) -> VisionTransformer:
        return VisionTransformer(attention, num_classes, in_channels, image_size, patch_size, dim, depth, heads,
                                 mlp_ratio, dropout, split_controller, **attention_options)

    register_model(name, family="vit", kind="discrete", tasks=DETECTION_READY, attentions=VIT_ATTENTIONS,
                   recipe=VIT_RECIPE)(build)


for _name, _size in VIT_SIZES.items():
    _register(_name, *_size)
