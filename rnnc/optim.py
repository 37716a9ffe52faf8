"""Optimizer updates as graph nodes, so one session.run is one whole training step.

Inputs of the step: `lr` (scalar; schedules feed it, no recompile) and `step` (i64 scalar,
the number of updates already made). Each parameter P has slots by optimizer:
sgd with momentum `P.momentum`; adam and adamw `P.m`, `P.v`. Updates (PyTorch's forms):

    clip_norm:  g ← g · clip / max(‖g‖, clip)          (‖g‖ the global norm of all grads)
    sgd:        buf ← μ·buf + g ;  P ← P − lr·buf      (μ = 0: P ← P − lr·g)
    adam:       m ← β1·m + (1−β1)·g ; v ← β2·v + (1−β2)·g² ; t = step + 1
                P ← P − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)
    adamw:      P ← P·(1 − lr·wd), then the adam update
"""
from __future__ import annotations



from .builder import Builder, Tensor
from .ir import TrainConfig
from .resolve_train import OPTIMIZERS


def slot_names(optimizer: str, args: dict) -> tuple[str, ...]:
    if optimizer == "sgd":
        return ("momentum",) if args.get("momentum", 0.0) else ()
    return ("m", "v")


def global_norm(b: Builder, grads: list[Tensor]) -> Tensor:
    total = None
    for g in grads:
        sq = b.op("ReduceSumSquare", [g], (), attrs={"keepdims": 0})
        total = sq if total is None else b.add(total, sq)
    return b.sqrt(total)


def apply_updates(b: Builder, cfg: TrainConfig, params: dict[str, Tensor], grads: dict[str, Tensor],
                  slots: dict[str, dict[str, Tensor]], lr: Tensor, step: Tensor,
                  placement: dict[str, str | None] | None = None):
    """New values of every parameter and slot, and the global gradient norm (before clipping).
    Each parameter's update runs where the parameter is used (`placement`: rnnc/placement.py)."""
    args = {**OPTIMIZERS[cfg.optimizer], **dict(cfg.optimizer_args)}
    names = list(params)
    gs = [grads[n] if n in grads else b.zeros_like(params[n]) for n in names]
    norm = global_norm(b, gs)
    clip = args.get("clip_norm")
    if clip:
        c = b.const(float(clip))
        scale = b.div(c, b.maximum(norm, c))
        gs = [b.mul(g, scale) for g in gs]
    new_params, new_slots = {}, {}
    t = b.add(b.cast(step, b.fdtype), 1.0)
    for name, g in zip(names, gs):
        b.root.placement = (placement or {}).get(name)
        p = params[name]
        if cfg.optimizer == "sgd":
            mu = args.get("momentum", 0.0)
            if mu:
                buf = b.add(b.mul(slots[name]["momentum"], float(mu)), g)
                new_slots[name] = {"momentum": buf}
                g = buf
            new_params[name] = b.sub(p, b.mul(lr, g))
            continue
        b1, b2, eps = float(args["beta1"]), float(args["beta2"]), float(args["eps"])
        if cfg.optimizer == "adamw":
            p = b.mul(p, b.sub(1.0, b.mul(lr, float(args["weight_decay"]))))
        m = b.add(b.mul(slots[name]["m"], b1), b.mul(g, 1.0 - b1))
        v = b.add(b.mul(slots[name]["v"], b2), b.mul(b.mul(g, g), 1.0 - b2))
        m_hat = b.div(m, b.sub(1.0, b.pow(b.const(b1), t)))
        v_hat = b.div(v, b.sub(1.0, b.pow(b.const(b2), t)))
        new_params[name] = b.sub(p, b.div(b.mul(lr, m_hat), b.add(b.sqrt(v_hat), eps)))
        new_slots[name] = {"m": m, "v": v}
    b.root.placement = None
    return new_params, new_slots, norm



