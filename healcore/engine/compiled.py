"""Compiled training steps (`compile=default|reduce-overhead`): the loss of a batch under `torch.compile`.

Why: at batch 32 a BERT step on a GPU is launch-bound (docs/PERFORMANCE.md), and `reduce-overhead` replays the
step's kernels as CUDA graphs. What is compiled is the forward and the loss (AOTAutograd compiles the backward
with it); the optimizer step and evaluation stay eager, and the model object is untouched, so checkpoints,
state_dict keys and every artefact are those of an eager run.

Shapes: a compiled step pads each batch's width up to a multiple of WIDTH_MULTIPLE (attention masks the extra
positions), which bounds the shapes a run meets to max_length / WIDTH_MULTIPLE widths (x2 for a short last batch).
- A single run's step compiles once with dynamic shapes; the model is an argument, not a closure, so a
  persistent worker's next run (a new model object of the same architecture) reuses the compiled code.
- A fused group's step compiles per shape (`vmap` over symbolic shapes fails in torch's tracer), so the limit on
  recompiles is raised to cover every width.
On CUDA, `reduce-overhead` records one CUDA graph per shape. On CPU it is the same as `default`: on a 2-core CPU
the compiled step ran at 0.67x eager and compiling added a minute or two per grid (docs/PERFORMANCE.md), so `off`
is the default until a GPU measures it.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
import torch._dynamo.config as dynamo_config

WIDTH_MULTIPLE = 16  # compiled steps see batch widths in steps of 16 tokens: few shapes, few graphs
RECOMPILES = 64  # distinct shapes one compiled function may be specialised to (torch's default is 8)


def width_multiple(mode: str) -> int:
    """What collate pads a training batch's width to a multiple of, under this compile mode."""
    return 1 if mode == "off" else WIDTH_MULTIPLE


@lru_cache(maxsize=None)
def compiled(fn: Callable, mode: str, dynamic: bool) -> Callable:
    """fn under torch.compile in this mode, built once per process (torch caches the code it generates per
    function, so one wrapper serves every run a worker executes); fn itself when mode is off."""
    if mode == "off":
        return fn

    for key in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(dynamo_config, key):
            setattr(dynamo_config, key, max(getattr(dynamo_config, key), RECOMPILES))
    return torch.compile(fn, mode=mode, dynamic=dynamic)


def static_addresses(tensors, mode: str) -> None:
    """Tell CUDA graphs these tensors (a fused group's stacked weights and buffers, updated in place) keep their
    address from step to step, so a replay reads them where they are instead of copying them in first: the
    weights of 27 BERT-base members are 12 GB. Not guarded, so a new group re-records graphs, not recompiles."""
    if mode == "reduce-overhead":
        for t in tensors:
            torch._dynamo.mark_static_address(t, guard=False)


def begin_step(mode: str, device: str) -> None:
    """Tell CUDA graph trees a new training step begins, so they may reuse the previous step's buffers."""
    if mode == "reduce-overhead" and str(device).startswith("cuda"):
        torch.compiler.cudagraph_mark_step_begin()
