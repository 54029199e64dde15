"""DeepSpeed set-up for the two engines (separator + critic) and one training step with them.

- ``single_process_env``: what torch.distributed needs without a launcher;
- ``import_deepspeed(backend)``: DeepSpeed without its first-use JIT builds on CPU;
- ``init_distributed`` / ``close_distributed``: the rank's process group (its GPU bound
  under nccl) and DeepSpeed, started, and the group ended;
- ``build_engines(method, ds_sep, ds_critic, deepspeed, channels_last)``: the two engines
  (channels-last conv weights when asked and possible, ``to_channels_last``; 0-dim parameters
  made (1,) for DeepSpeed, ``scalar_shapes`` restores them around an export);
- ``train_step(method, sep, critic, mix, step)``: separator update with the critic frozen, then
  the critic's update when due.
"""

from __future__ import annotations

import os

import torch

from ial.errors import ConfigError, first_line
from ial.runtime import free_port


def single_process_env(env: dict | None = None) -> dict:
    """Set what torch.distributed needs for one process without a launcher (in ``env``,
    default ``os.environ``), unless a launcher already set RANK/WORLD_SIZE. Returns ``env``."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(free_port()))
    return env


def import_deepspeed(backend: str):
    """Import DeepSpeed for ``backend`` without paying its first-use JIT compilations.

    gloo → the CPU accelerator (``DS_ACCELERATOR=cpu`` unless set). The ``deepspeed_shm_comm``
    op (a 65–110 s g++ build on first use) is marked incompatible so DeepSpeed uses plain
    torch.distributed collectives; the configs set ``"torch_adam": true`` so no fused Adam is
    built either (DEPENDENCIES.md).
    """
    if backend == "gloo":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    from deepspeed.utils import logger

    logger.addFilter(_not_warmup_start_warning)  # once: a Logger keeps one copy of a filter
    return deepspeed


def init_distributed(backend: str, timeout_s: float | None = None):
    """Start this process's torch.distributed group (env:// rendezvous: RANK, WORLD_SIZE,
    MASTER_ADDR/PORT from the launcher or ``single_process_env``) and hand it to DeepSpeed;
    returns the ``deepspeed`` module (``import_deepspeed``).

    nccl: the rank's GPU (``LOCAL_RANK``) is bound first and passed as ``device_id``, so
    collectives never guess it from the global rank (PyTorch warns that such a guess "can cause
    a hang if rank to GPU mapping is heterogeneous"; seen on an H200 with
    ``benchmarks/gpu_check.sh``). A rank without a GPU of its own (no CUDA, or more processes
    on a host than it has GPUs) is a ``ConfigError`` naming ``backend``, before DeepSpeed is
    imported. No-op for the group when it already exists (a later in-process run).
    """
    import datetime

    import torch.distributed as dist

    from ial.config import ConfigError

    device_id = None
    if backend == "nccl" and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if local_rank >= visible:
            raise ConfigError("backend", f"nccl needs a CUDA device for each process of a "
                                         f"host: local rank {local_rank}, this host sees "
                                         f"{visible} (backend: gloo runs on CPUs; or fewer "
                                         f"--num-procs)")
        device_id = torch.device("cuda", local_rank)
    deepspeed = import_deepspeed(backend)
    timeout = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
    if not dist.is_initialized():
        if device_id is not None:
            torch.cuda.set_device(device_id)
        dist.init_process_group(backend=backend, init_method="env://", device_id=device_id,
                                **timeout)
    deepspeed.init_distributed(dist_backend=backend, **timeout)
    return deepspeed


def close_distributed() -> None:
    """End this process's torch.distributed group, if any: the last call of a rank's process
    (``python -m ial.training``). In-process runs keep theirs for the next run (``train``)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _not_warmup_start_warning(record) -> bool:
    """False for the warning DeepSpeed 0.19's ``WarmupLR.__init__`` logs by calling its own
    ``get_lr()`` before the first step ("... before it has started"): on every run with a
    warm-up, twice, and harmless (the start lr it then returns is the intended one)."""
    return "before it has started" not in record.getMessage()


def vectorize_scalar_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Give every 0-dim parameter of ``module`` shape (1,) (same storage); returns them.

    DeepSpeed 0.19.8 cannot handle 0-dim parameters (its model broadcast views each parameter as
    bytes, its gradient clipping multiplies by a (1,) tensor in place — both raise). A learnable
    scalar (e.g. a sigmoid's slope) broadcasts the same as a (1,) tensor, so training is
    unchanged; ``scalar_shapes`` restores the original shapes around an export so ``model.pt``
    matches ``build_model``.
    """
    scalars = [p for p in module.parameters() if p.dim() == 0]
    for p in scalars:
        p.data = p.data.view(1)
    return scalars


class scalar_shapes:
    """Context: the given (vectorized) parameters are 0-dim again inside (same storage)."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params

    def __enter__(self):
        for p in self.params:
            p.data = p.data.view(())

    def __exit__(self, *exc):
        for p in self.params:
            p.data = p.data.view(1)


def optimizer_groups(separator, overrides: dict) -> list[dict]:
    """The separator's parameter groups (``Separator.param_groups``) as optimizer groups, each
    with the settings the DeepSpeed JSON's ``"param_groups"`` gives it (e.g. ``{"visual":
    {"lr": 1e-3}}``: the authors' visual-net learning rate); the others use the optimizer's."""
    from ial.config import ConfigError

    groups = separator.param_groups()
    known = [*separator.PARAM_GROUPS, separator.DEFAULT_GROUP]  # a group may be empty (frozen)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError("deepspeed", f"param_groups {unknown} are not groups of model "
                          f"{type(separator).__name__} (it has: {', '.join(known)})")
    return [{"params": params, "name": name, **overrides.get(name, {})}
            for name, params in groups.items()]


def _initialize(deepspeed, which: str, **kwargs):
    """``deepspeed.initialize(**kwargs)``'s engine. DeepSpeed checks its JSON with asserts and
    pydantic models: what they refuse (an unknown optimizer type, a bad ZeRO stage) is a
    ``ConfigError`` on ``deepspeed``, in one line, instead of a traceback from every rank."""
    try:
        return deepspeed.initialize(**kwargs)[0]
    except (AssertionError, ValueError) as exc:
        raise ConfigError("deepspeed", f"DeepSpeed refuses the {which}'s config: "
                                       f"{first_line(exc)}") from None


def build_engines(method, ds_sep: dict, ds_critic: dict, deepspeed, channels_last: bool = False):
    """(separator engine, critic engine, vectorized scalar parameters) for an ``IALMethod``.

    The separator's optimizer gets its parameter groups (``optimizer_groups``, settings from the
    JSON's ``"param_groups"``); ``ds_critic`` is ``deepspeed_configs``' critic config, which has
    none. The critic's parameters must be trainable here (ZeRO only takes trainable parameters);
    ``train_step`` freezes them during the separator's backward.
    ``channels_last`` (``TrainConfig.channels_last``): conv weights NHWC once the engines have
    started (their start-up broadcast views each parameter as bytes, which needs NCHW), the
    activations follow them; not under ZeRO, whose optimizer owns flat parameter buffers.
    """
    ds_sep = dict(ds_sep)
    groups = ds_sep.pop("param_groups", {}) or {}
    scalars = vectorize_scalar_parameters(method)
    sep = _initialize(deepspeed, "separator", model=method.separator, config=ds_sep,
                      model_parameters=optimizer_groups(method.separator, groups))
    critic = _initialize(deepspeed, "critic", model=method.critic, config=ds_critic,
                         model_parameters=method.critic.parameters())
    if sep.dp_world_size == 1 and not sep.zero_optimization():
        # One data-parallel rank: nothing to all-reduce (DeepSpeed would still flatten, "reduce"
        # and copy back every gradient after each backward).
        sep.enable_backward_allreduce = critic.enable_backward_allreduce = False
    if channels_last and not sep.zero_optimization():
        to_channels_last(method)
    return sep, critic, scalars


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Conv weights, and with them the activations and gradients, in NHWC memory; returns
    ``module``.

    PyTorch 2.13's CPU convolution (oneDNN) corrupts the heap in the backward of a 1×1 conv with
    stride > 1 and 2 to 15 input channels on a channels-last path: the process aborts with
    ``free(): invalid next size`` (the shortcut of a narrow ResNet stage, e.g.
    ``model.audio_channels=[4, 8, 16, 32]``; measured: 16 input channels and up, kernel 3, or
    stride 1 are fine, in either layout). Such a conv (without padding) is run as what it
    computes, the 1×1 stride-1 conv of its input's every stride-th row and column
    (``_SubsampleInput``), which takes no such path.
    """
    module.to(memory_format=torch.channels_last)
    for conv in module.modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1) \
                and conv.padding == (0, 0) and max(conv.stride) > 1 and conv.in_channels < 16:
            conv.register_forward_pre_hook(_SubsampleInput(conv.stride))
            conv.stride = (1, 1)
    return module


class _SubsampleInput:
    """Forward pre-hook of ``to_channels_last``: every ``stride``-th row and column of the
    conv's input. Shape: (B, C, H, W) → (B, C, ⌈H/s0⌉, ⌈W/s1⌉)."""

    def __init__(self, stride: tuple[int, int]):
        self.stride = tuple(stride)

    def __call__(self, conv: torch.nn.Module, args: tuple) -> tuple:
        return (args[0][:, :, ::self.stride[0], ::self.stride[1]], *args[1:])


def train_step(method, sep_engine, critic_engine, mix, step: int) -> dict[str, float]:
    """One batch of IAL with two DeepSpeed engines on a MixBatch; returns the losses' logs.

    Separator, when due (every ``separator_every``-th batch): forward (through its engine) and
    backward with the critic frozen (its parameters must get no gradient), engine step. Critic,
    when due: hinge loss on the detached components (the separator's, or a no-grad forward on the
    batches without a separator update), backward, engine step, ``critic_updates`` times, each
    with fresh bank partners (the last also pushes the components into the memory bank). The
    adversarial term scores pairs with the critic MODULE, not its engine: the engine's forward
    arms backward hooks that expect ``critic_engine.backward``.
    """
    sep_engine.train()
    critic_engine.train()
    logs: dict[str, float] = {}
    components = None
    if method.separator_due(step):
        with method.critic_frozen():
            loss, logs, components = method.separator_loss(mix, step, separator=sep_engine,
                                                           critic=method.critic)
            sep_engine.backward(loss)
        sep_engine.step()
    if method.critic_due(step):
        if components is None:
            components = method.components(mix)
        labels, updates = method.component_labels(mix), method.cfg.critic_updates
        prepared = method.critic.prepare(components.detach())  # once for all updates
        for update in range(updates):
            c_loss, c_logs = method.critic_loss(components, step, critic=critic_engine,
                                                labels=labels, remember=update == updates - 1,
                                                prepared=prepared)
            critic_engine.backward(c_loss)
            critic_engine.step()
            if update == 0:  # its scores before it trained on this batch, as with one update
                logs.update(c_logs)
    logs["separator_update"] = float(method.separator_due(step))
    return logs
