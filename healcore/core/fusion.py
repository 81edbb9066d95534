"""Which runs of a grid may train fused, and how many members fit at once (torch-free planning; the fused training
itself is engine/fused.py).

Runs that share every field but their damage and learning rate (config.FUSE_FIELDS) and fine-tune fully see the
same batches in the same order, the same schedule and the same evaluation: they may train as one model. A group
takes at most as many members as the device's free memory holds (member_bytes); the rest train as a further group.
"""
from __future__ import annotations

from healcore.core.config import FUSE_FIELDS, RunConfig
from healcore.core.errors import ModelError
from healcore.core.model_facts import model_shape

MAX_MEMBERS = 27  # the paper's 9 settings x 3 learning rates; memory grows with each member (member_bytes)
BYTES_PER_PARAM = 20  # a member's own model (4) and its slice of the stacked weights, gradients and two moments (16)
MEMORY_SHARE = 0.8  # of the memory free when a group starts, what its members may be planned to fill


def fusion_groups(configs: list[RunConfig], fuse: int = MAX_MEMBERS) -> list[list[RunConfig]]:
    """configs split into groups that can train fused (at most `fuse` each); runs that cannot fuse (another mode
    than full, parts frozen, per-layer rates, removed layers) are groups of one. Order follows the configs'."""
    groups: dict[tuple, list[RunConfig]] = {}
    alone = []
    for cfg in configs:
        # another mode, frozen parts or per-layer rates train differently; removal changes the architecture
        if cfg.mode != "full" or cfg.train_layers != "all" or cfg.lr_layer_decay != 1.0 or cfg.method == "remove":
            alone.append([cfg])
            continue
        groups.setdefault(tuple(getattr(cfg, k) for k in FUSE_FIELDS), []).append(cfg)
    out = [g[i:i + fuse] for g in groups.values() for i in range(0, len(g), fuse)]
    return out + alone


def member_bytes(cfg: RunConfig) -> int:
    """Device memory one fused member is planned to take: BYTES_PER_PARAM per parameter, plus the activations a
    batch at full width keeps for the backward, in fp32 with eager attention (vmap needs it): per layer
    2 s b h (34 + 5 a s / h) bytes (Korthikanti et al. 2022, doubled from 16-bit), s = max_length, b = batch."""
    m = model_shape(cfg.model)
    if not m["heads"]:
        raise ModelError(f"model {cfg.model!r}: its config.json does not give its number of attention heads")
    hidden, layers = m["hidden"], m["layers"]
    params = m["params"] + m["type_vocab"] * hidden + hidden * hidden  # and the token types and pooler, if any
    s, b = cfg.max_length, cfg.batch_size
    activations = layers * 2 * s * b * hidden * (34 + 5 * m["heads"] * s / hidden)
    return int(BYTES_PER_PARAM * params + activations)


def members_that_fit(configs: list[RunConfig], free_bytes: int) -> int:
    """How many members of this group a device with `free_bytes` free can train at once (at least 1)."""
    return max(1, min(len(configs), int(MEMORY_SHARE * free_bytes // member_bytes(configs[0]))))
