"""Horizontally fused runs (`healcore grid --fuse`): runs of a grid that differ only in their corruption and
learning rate train as one model (HFTA, Wang et al., MLSys 2021).

On a (model, dataset, seed), the paper's 9 corruption settings x 3 learning rates are 27 runs that see the same
batches in the same order (data order depends on the seed alone). Fused, their parameters are stacked
(`torch.func.stack_module_state`), one forward and backward serve every member (`vmap` over `functional_call`,
dropout drawn independently per member, eager attention: SDPA has no batching rule), and one Adam step updates
them all with a learning rate per member. Each member keeps its own run folder, written exactly as a single run
writes it (metrics, probe, features, analysis, summary, checkpoints in the same format), plus `fused_with` in its
summary. A member whose loss turns NaN/inf is failed and dropped; the others go on.

What may fuse, and how many members fit: core/fusion.py. Members resume together from their checkpoints (members at different
epochs train as separate groups).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from healcore.core.config import RunConfig
from healcore.core.errors import HealcoreError, Interrupted, RunBusyError, first_line
from healcore.engine import train  # train.cross_entropy looked up at each call: the loss seam
from healcore.engine.compiled import compiled, static_addresses
from healcore.engine.models import pick_device
from healcore.engine.resources import Loader
from healcore.engine.run import (ProgressReporter, StopFlag, begin_attempt, checkpoint_due, damage_probe,
                                 evaluate_epoch, finished_summary, preflight, record_failure, set_up, summarise)
from healcore.engine.train import (EpochPass, autocast, decays, load_state, make_optimizer, save_state, schedule_of,
                                   use_bf16)
from healcore.core.fusion import members_that_fit
from healcore.store.io import now
from healcore.store.runs import RunHandle, RunStore


@dataclass
class Member:
    cfg: RunConfig
    handle: RunHandle
    setup: Any = None  # run.Setup
    probe: dict = field(default_factory=dict)
    best: dict = field(default_factory=lambda: {"epoch": None, "score": -float("inf")})
    start_epoch: int = 1
    shadow: Any = None  # a torch optimizer and scheduler in the single-run format, for checkpoints
    result: dict | None = None  # set once the member ends


def free_memory(device: str) -> int:
    """Bytes free on the device now: CUDA's free memory, or the host's available memory (/proc/meminfo)."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib * 1024
    except (OSError, StopIteration, ValueError):
        return 1 << 62  # unknown: no cap


def execute_fused(configs: list[RunConfig], store: RunStore, loader: Loader | None = None,
                  free_bytes: int | None = None) -> list[dict]:
    """Run (or reuse, or resume) a group of fusable runs; one result per config:
    {"run_id", "state": completed | failed | interrupted | busy, "error"?}. A group larger than the device's free
    memory holds (members_that_fit) trains as consecutive smaller groups, not into an out-of-memory error.
    `free_bytes`: the memory to plan with (None: what the device has free now)."""
    free = free_bytes if free_bytes is not None else free_memory(pick_device(configs[0].device))
    try:
        k = members_that_fit(configs, free)
    except HealcoreError:  # the model's size is unknown here: the group goes as it is, and each run says why
        k = len(configs)
    return [r for i in range(0, len(configs), k) for r in _execute_group(configs[i:i + k], store, loader)]


def _execute_group(configs: list[RunConfig], store: RunStore, loader: Loader | None) -> list[dict]:
    loader = loader or Loader(cache=True)
    members, done = [], []
    for cfg in configs:
        splits = preflight(cfg, loader)
        try:
            handle = store.open_run(cfg)
        except RunBusyError:
            done.append({"run_id": cfg.run_id, "state": "busy"})
            continue
        if finished_summary(handle) is not None:
            handle.close()
            done.append({"run_id": cfg.run_id, "state": "completed"})
            continue
        begin_attempt(handle, splits, note=f", fused with {len(configs) - 1} other run(s)")
        members.append((Member(cfg, handle), splits))
    live: list[Member] = []
    for m, splits in members:
        try:
            m.setup = set_up(m.cfg, splits, m.handle, loader)
            m.probe = damage_probe(m.cfg, m.setup, m.handle)
            live.append(m)
        except BaseException as err:  # noqa: BLE001 - this member fails; the group goes on without it
            _end(m, err)
            if isinstance(err, KeyboardInterrupt):
                raise
    try:
        with StopFlag(*[m.handle for m in live]) as stop:
            for epoch_group in _by_resume_epoch(live):
                _train(epoch_group, stop)
    except BaseException as err:  # noqa: BLE001 - an interrupt (or a bug) ends every member still going
        for m in live:
            if m.result is None:
                _end(m, err)
        if not isinstance(err, (Interrupted, KeyboardInterrupt, HealcoreError)):
            raise
    finally:
        for m, _ in members:
            m.handle.close()
    return done + [m.result for m, _ in members]


def _end(m: Member, err: BaseException | None) -> None:
    if err is None:
        m.handle.set_status("completed", ended=now())
        m.handle.log("completed")
        m.result = {"run_id": m.cfg.run_id, "state": "completed"}
        return
    record_failure(m.handle, err)
    state = "interrupted" if isinstance(err, (Interrupted, KeyboardInterrupt)) else "failed"
    m.result = {"run_id": m.cfg.run_id, "state": state, "error": first_line(err)}


def _by_resume_epoch(members: list[Member]) -> list[list[Member]]:
    """Members grouped by the epoch their checkpoints resume at (all at 1 for a fresh group)."""
    groups: dict[int, list[Member]] = {}
    for m in members:
        latest = m.handle.latest_checkpoint()
        m.start_epoch = latest[0] + 1 if latest else 1
        groups.setdefault(m.start_epoch, []).append(m)
    return [groups[e] for e in sorted(groups)]


# ------------------------------------------------------------------------------------------ training
class StackedAdam:
    """Adam(W) over stacked parameters (member first), one learning rate per member: torch.optim.AdamW's
    update, member by member, with its defaults (betas 0.9/0.999, eps 1e-8) and make_optimizer's rule of no
    decay on biases and norms."""

    def __init__(self, params: dict, lrs, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.weight_decay, self.betas, self.eps = params, weight_decay, betas, eps
        self.lrs = torch.as_tensor(lrs, dtype=torch.float32)
        self.state = {n: {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                      for n, p in params.items() if p.requires_grad}

    def step(self, factor: float) -> None:
        b1, b2 = self.betas
        with torch.no_grad():
            for name, p in self.params.items():
                if p.grad is None or name not in self.state:
                    continue
                st = self.state[name]
                st["step"] += 1
                lr = (self.lrs.to(p.device) * factor).view(-1, *([1] * (p.dim() - 1)))
                if self.weight_decay and decays(name, p.dim() - 1):  # a member's parameter: without axis 0
                    p.mul_(1 - lr * self.weight_decay)
                st["exp_avg"].lerp_(p.grad, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                bias1, bias2 = 1 - b1 ** st["step"], 1 - b2 ** st["step"]
                denom = (st["exp_avg_sq"].sqrt() / bias2 ** 0.5).add_(self.eps)
                p.sub_(lr / bias1 * st["exp_avg"] / denom)
                p.grad = None

    def keep(self, index) -> None:
        """Only the members at `index` (a list of positions) go on."""
        idx = torch.as_tensor(index, dtype=torch.long)
        self.lrs = self.lrs[idx]
        for name, p in list(self.params.items()):
            self.params[name] = p.detach()[idx.to(p.device)].clone().requires_grad_(p.requires_grad)
            if name in self.state:
                for k in ("exp_avg", "exp_avg_sq"):
                    self.state[name][k] = self.state[name][k][idx.to(p.device)].clone()


def _train(members: list[Member], stop) -> None:
    """Fused training of members that resume at the same epoch, then each member's summary."""
    group = FusedGroup(members)
    for epoch in range(members[0].start_epoch, members[0].cfg.epochs + 1):
        batches = group.train_epoch(epoch, stop)
        if not group.members:
            return  # every member diverged
        group.end_epoch(epoch, batches)
    for m in group.members:
        summary = summarise(m.cfg, m.setup, m.handle, m.probe, m.best)
        summary["fused_with"] = sorted(other.cfg.run_id for other in group.members if other is not m)
        m.handle.write_summary(summary)
        _end(m, None)


def fused_losses(template, params: dict, buffers: dict, input_ids, attention_mask, token_type_ids, labels,
                 device: str, bf16: bool):
    """Each member's mean cross-entropy on one batch: one vmapped forward over the stacked weights (the part of a
    fused step that `compile` compiles). Dropout draws differently per member, as in runs trained alone."""
    def forward(p, b, ids, mask, types):
        return functional_call(template, (p, b), (ids, mask, types))[0]

    with autocast(device, bf16=bf16):
        logits = vmap(forward, in_dims=(0, 0, None, None, None), randomness="different")(
            params, buffers, input_ids, attention_mask, token_type_ids)
    return torch.stack([train.cross_entropy(logits[k], labels) for k in range(logits.shape[0])])


class FusedGroup:
    """The members' models stacked into one: a vmapped forward, one StackedAdam, the shared schedule."""

    def __init__(self, members: list[Member]):
        self.members = members
        cfg0 = self.cfg = members[0].cfg
        self.device = members[0].setup.device
        self.steps_per_epoch, total, self.factor = schedule_of(len(members[0].setup.train), cfg0.batch_size,
                                                               cfg0.epochs, cfg0.warmup_ratio, cfg0.lr_schedule)
        resumed_rng = _shadow_optimizers(members, self.factor, self.device)
        self.template = copy.deepcopy(members[0].setup.model).to("meta")
        self.template.encoder.config._attn_implementation = "eager"  # SDPA has no vmap batching rule
        params, self.buffers = stack_module_state([m.setup.model for m in members])
        self.names = list(params)
        self.optimizer = StackedAdam(params, [m.cfg.lr for m in members], cfg0.weight_decay)
        _load_moments(self.optimizer, members)
        torch.manual_seed(cfg0.seed)  # as a single run: dropout draws from here on (or from the checkpoint's state)
        if resumed_rng is not None:
            torch.set_rng_state(resumed_rng)

        # static shapes: vmap fails over symbolic ones (compiled.py)
        self.losses_of = compiled(fused_losses, cfg0.compile, dynamic=False)
        static_addresses([*params.values(), *self.buffers.values()], cfg0.compile)
        self.progress = [ProgressReporter(m.cfg, m.handle, self.steps_per_epoch, total, m.start_epoch, False)
                         for m in members]
        self.step_index = (members[0].start_epoch - 1) * self.steps_per_epoch

    def train_epoch(self, epoch: int, stop) -> EpochPass:
        """One pass over the shared batches (a single run's, train.EpochPass); a member whose loss turns NaN/inf is
        failed and dropped."""
        setup = self.members[0].setup
        bf16 = use_bf16(self.device, self.cfg.precision)
        batches = EpochPass(setup.train, epoch=epoch, seed=self.cfg.seed, batch_size=self.cfg.batch_size,
                            device=self.device, pad_id=setup.pad_id, compile=self.cfg.compile, stop=stop)
        self.loss_sum = torch.zeros(len(self.members), device=self.device)
        training_mode(self.template)
        for step, batch in batches:
            losses = self.losses_of(self.template, self.optimizer.params, self.buffers, batch["input_ids"],
                                    batch["attention_mask"], batch.get("token_type_ids"), batch["labels"],
                                    self.device, bf16)
            losses.sum().backward()
            self.optimizer.step(self.factor(self.step_index))
            self.step_index += 1
            self.loss_sum += losses.detach()
            if batches.syncs(step):
                means = (self.loss_sum / (step + 1)).tolist()
                self._drop_diverged(means, batches, step)
                if not self.members:
                    break
                for k, m in enumerate(self.members):
                    self.progress[k].step(epoch, step + 1, len(batches), float(self.loss_sum[k]) / (step + 1))
        return batches

    def _drop_diverged(self, means: list[float], batches: EpochPass, step: int) -> None:
        keep = [k for k, v in enumerate(means) if np.isfinite(v)]
        if len(keep) == len(self.members):
            return
        for k in sorted(set(range(len(self.members))) - set(keep)):
            _end(self.members[k], batches.diverged(means[k], step))
        self.members = [self.members[k] for k in keep]
        self.progress = [self.progress[k] for k in keep]
        if keep:
            self.optimizer.keep(keep)
            self.buffers = {n: b[torch.as_tensor(keep, device=b.device)] for n, b in self.buffers.items()}
            static_addresses([*self.optimizer.params.values(), *self.buffers.values()], self.cfg.compile)
            self.loss_sum = self.loss_sum[torch.as_tensor(keep, device=self.loss_sum.device)]

    def end_epoch(self, epoch: int, batches: EpochPass) -> None:
        """Each member evaluates, logs its metrics line and checkpoints, as a single run does."""
        _unstack(self.optimizer, self.buffers, self.names, self.members)
        for k, m in enumerate(self.members):
            stats = {**batches.stats(float(self.loss_sum[k])), "train_s": batches.seconds / len(self.members),
                     "fused_train_s": batches.seconds, "lr": m.cfg.lr * self.factor(self.step_index - 1)}
            row, improved = evaluate_epoch(m.cfg, m.setup, m.handle, epoch, stats, m.best)
            if improved:
                m.best = {"epoch": epoch, "score": row[m.cfg.select_on][m.cfg.metric]}
            self.progress[k].epoch_done(epoch, row)
            if checkpoint_due(m.cfg, epoch):
                _checkpoint(m, self.optimizer, k, self.step_index, epoch)


def _shadow_optimizers(members: list[Member], factor, device: str):
    """Each member's optimizer and scheduler in the single-run format (checkpoints stay readable by either
    path), loaded from its checkpoint when it has one. Returns the torch RNG state the checkpoints kept."""
    resumed_rng = None
    for m in members:
        opt = make_optimizer(m.setup.model, m.cfg.lr, m.cfg.weight_decay, device)
        m.shadow = (opt, torch.optim.lr_scheduler.LambdaLR(opt, factor))
        latest = m.handle.latest_checkpoint()
        if latest is not None:
            meta = load_state(latest[1], m.setup.model, *m.shadow)
            resumed_rng = torch.get_rng_state()  # the same in every member's checkpoint: one process saved them
            m.best = meta["best"]
            m.handle.log(f"resumed from the checkpoint of epoch {latest[0]}")
    return resumed_rng


def _unstack(optimizer: StackedAdam, buffers: dict, names: list[str], members: list[Member]) -> None:
    """Each member's slice of the stacked weights into its own model (for evaluation, summaries, checkpoints)."""
    with torch.no_grad():
        for k, m in enumerate(members):
            own = dict(m.setup.model.named_parameters())
            for name in names:
                own[name].copy_(optimizer.params[name][k])
            own_buffers = dict(m.setup.model.named_buffers())
            for name, b in buffers.items():
                own_buffers[name].copy_(b[k])


def _checkpoint(m: Member, optimizer: StackedAdam, k: int, step_index: int, epoch: int) -> None:
    """The member's checkpoint in the single-run format: its weights, its Adam moments as torch's AdamW keeps
    them, the scheduler at the same step, the torch RNG."""
    opt, sched = m.shadow
    params = dict(m.setup.model.named_parameters())
    by_param = {id(p): n for n, p in params.items()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = optimizer.state[by_param[id(p)]]
            opt.state[p] = {"step": torch.tensor(float(st["step"])), "exp_avg": st["exp_avg"][k].clone(),
                            "exp_avg_sq": st["exp_avg_sq"][k].clone()}
    sched.last_epoch = step_index  # where a single run's scheduler would be, and its optimizer's current rate
    factor = sched.lr_lambdas[0](step_index)
    for group in opt.param_groups:
        group["lr"] = m.cfg.lr * factor
    sched._last_lr = [group["lr"] for group in opt.param_groups]
    save_state(m.handle.new_checkpoint_dir(epoch), m.setup.model, opt, sched, {"epoch": epoch, "best": m.best})
    m.handle.commit_checkpoint(epoch)


def _load_moments(optimizer: StackedAdam, members: list[Member]) -> None:
    """Adam moments restored from the members' checkpoints (their shadow optimizers) into the stacks."""
    for k, m in enumerate(members):
        opt, _ = m.shadow
        names = {id(p): n for n, p in m.setup.model.named_parameters()}
        for p, st in opt.state.items():
            name = names.get(id(p))
            if name in optimizer.state and "exp_avg" in st:
                optimizer.state[name]["step"] = int(float(st["step"]))
                with torch.no_grad():
                    optimizer.state[name]["exp_avg"][k].copy_(st["exp_avg"])
                    optimizer.state[name]["exp_avg_sq"][k].copy_(st["exp_avg_sq"])


def training_mode(module: torch.nn.Module, mode: bool = True) -> None:
    """Dropout on (or off) in every submodule of the stacked group's template, by the flag nn.Module.train sets: the
    template lives on the meta device, and transformers' own train() (5.2x) kernelizes the model for its device,
    which refuses meta."""
    for m in module.modules():
        m.training = mode
