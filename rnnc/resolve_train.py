"""The `train { ... }` block -> TrainConfig, every option checked (LANGUAGE.md §6)."""
from __future__ import annotations

from . import syntax as S
from .errors import ErrorCollector, did_you_mean
from .ir import TrainConfig
from .resolve_cells import _literal

OPTIMIZERS = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "clip_norm": None},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "clip_norm": None},
    "adamw": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "clip_norm": None},
}
SCHEDULES = {
    "exponential": {"decay": None, "every": None},
    "step": {"gamma": None, "every": None},
    "cosine": {"total": None, "min_lr": 0.0},
}
KEYS = ("optimizer", "schedule", "batch", "epochs", "steps", "tbptt", "validate")


def _call_options(kind: str, table: dict, value, errors: ErrorCollector):
    """(name, ((key, value), ...)) of `adam(lr=0.01)` / `adam`, or None after an error."""
    if isinstance(value, S.Name):
        name, kwargs, args = value.name, (), ()
    elif isinstance(value, S.Call):
        name, kwargs, args = value.func, value.kwargs, value.args
    else:
        errors.error(f"{kind} must be one of {', '.join(table)}", value.span)
        return None
    if name not in table:
        errors.error(f"unknown {kind} '{name}'", value.span, did_you_mean(name, table) or
                     f"{kind}s: {', '.join(table)}")
        return None
    schema = table[name]
    opts = {}
    if args:
        if len(args) > 1:
            errors.error(f"{name}(...) takes one positional value (the first option); name the others",
                         args[1].span)
            return None
        kwargs = (S.Kwarg(next(iter(schema)), args[0], args[0].span),) + tuple(kwargs)
    for kw in kwargs:
        if kw.name not in schema:
            errors.error(f"{name}(...) has no option '{kw.name}'", kw.span,
                         did_you_mean(kw.name, schema) or f"options: {', '.join(schema)}")
            return None
        v = _literal(kw.value)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            errors.error(f"{name}({kw.name}=...) must be a number", kw.value.span)
            return None
        bad = (v <= 0 and kw.name in ("lr", "every", "total", "decay", "gamma", "clip_norm", "eps")) or \
              (v < 0 and kw.name in ("momentum", "weight_decay", "min_lr")) or \
              (v >= 1 and kw.name in ("beta1", "beta2", "momentum", "decay"))
        if bad:
            errors.error(f"{name}({kw.name}={v}) is out of range", kw.value.span)
            return None
        if kw.name in ("every", "total") and not isinstance(v, int):
            errors.error(f"{name}({kw.name}=...) is a number of steps: a whole number", kw.value.span)
            return None
        opts[kw.name] = v
    for k, default in schema.items():
        if default is None and k not in opts and k != "clip_norm":
            errors.error(f"{name}(...) needs {k}=...", value.span)
            return None
        opts.setdefault(k, default)
    return name, tuple(opts.items())


def default_train() -> TrainConfig:
    """Without a train block: adam(lr=0.001), batch 32, epochs 10 (LANGUAGE.md §6)."""
    return TrainConfig(optimizer="adam", optimizer_args=tuple(OPTIMIZERS["adam"].items()))


def resolve_train(block: S.TrainBlock, errors: ErrorCollector) -> TrainConfig:
    cfg: dict = {}
    seen: set[str] = set()
    for item in block.items:
        if item.key in seen:
            errors.error(f"'{item.key}' is given twice in the train block", item.span)
            continue
        seen.add(item.key)
        if item.key == "optimizer":
            got = _call_options("optimizer", OPTIMIZERS, item.value, errors)
            if got:
                cfg["optimizer"], cfg["optimizer_args"] = got
        elif item.key == "schedule":
            got = _call_options("schedule", SCHEDULES, item.value, errors)
            if got:
                cfg["schedule"], cfg["schedule_args"] = got
        elif item.key in ("batch", "epochs", "steps", "tbptt"):
            v = _literal(item.value)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                errors.error(f"{item.key} must be a positive whole number", item.value.span)
                continue
            cfg[item.key] = v
        elif item.key == "validate":
            v = _literal(item.value)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                errors.error("validate is the fraction held out, from 0 up to (not including) 1",
                             item.value.span)
                continue
            cfg["validate"] = float(v)
        else:
            errors.error(f"unknown train option '{item.key}'", item.span, did_you_mean(item.key, KEYS))
    if "epochs" in cfg and "steps" in cfg:
        errors.error("give epochs or steps, not both", block.span)
    if "steps" in cfg:
        cfg.setdefault("epochs", None)
    if "optimizer" not in cfg:
        default = default_train()
        cfg["optimizer"], cfg["optimizer_args"] = default.optimizer, default.optimizer_args
    return TrainConfig(**cfg)
