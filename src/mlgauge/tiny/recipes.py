"""Training recipes for the Tiny models (``rules/tiny_recipes.toml``) and their learning-rate schedules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import cache

from mlgauge.errors import ConfigError, UsageError
from mlgauge.rules import _load_rule_file

RECIPES_FILE = "tiny_recipes.toml"
SCHEDULES = ("constant", "steps", "exponential", "one_cycle")
ONE_CYCLE_WARMUP = 0.2  # the fraction of steps spent warming up


@dataclass(frozen=True)
class TinyRecipe:
    name: str  # "<id>.reference" or "<id>.synthetic"
    train_samples: int
    epochs: int
    batch_size: int
    learning_rate: float
    schedule: str
    lr_steps: tuple[tuple[int, float], ...] = ()
    decay: float = 1.0
    flip: bool = False

    def with_overrides(self, *, epochs: int | None = None, train_samples: int | None = None) -> TinyRecipe:
        changed = {k: v for k, v in (("epochs", epochs), ("train_samples", train_samples)) if v is not None}
        return replace(self, **changed)

    def to_dict(self) -> dict:
        return asdict(self)

    def scheduler(self, optimizer, steps_per_epoch: int):
        """A per-step LambdaLR multiplier of ``learning_rate`` following the schedule."""
        import torch

        total = max(1, self.epochs * steps_per_epoch)
        base = self.learning_rate

        def factor(step: int) -> float:
            epoch = step // max(1, steps_per_epoch)
            if self.schedule == "steps":
                return next(lr for first, lr in reversed(self.lr_steps) if epoch >= first) / base
            if self.schedule == "exponential":
                return self.decay**epoch
            if self.schedule == "one_cycle":
                warm = max(1, int(total * ONE_CYCLE_WARMUP))
                if step < warm:
                    return 0.04 + 0.96 * step / warm
                return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm)))) + 1e-3
            return 1.0

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _parse(data: dict, filename: str) -> dict[str, TinyRecipe]:
    recipes = {}
    for benchmark, kinds in data.items():
        for kind, entry in kinds.items():
            name = f"{benchmark}.{kind}"
            try:
                entry = dict(entry)
                entry["lr_steps"] = tuple((int(e), float(lr)) for e, lr in entry.get("lr_steps", ()))
                recipe = TinyRecipe(name=name, **entry)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{filename}: recipe {name} is invalid: {exc}") from None
            if recipe.schedule not in SCHEDULES or (recipe.schedule == "steps" and not recipe.lr_steps):
                raise ConfigError(f"{filename}: recipe {name} has schedule {recipe.schedule!r}; use one of {SCHEDULES}")
            if recipe.schedule == "steps" and recipe.lr_steps[0][0] != 0:
                raise ConfigError(f"{filename}: recipe {name}'s lr_steps must start at epoch 0")
            recipes[name] = recipe
    return recipes


@cache
def tiny_recipes() -> dict[str, TinyRecipe]:
    return _load_rule_file(RECIPES_FILE, _parse, ConfigError(f"{RECIPES_FILE} is missing from the mlgauge package"))


def recipe_for(benchmark: str, synthetic: bool) -> TinyRecipe:
    name = f"{benchmark}.{'synthetic' if synthetic else 'reference'}"
    recipes = tiny_recipes()
    if name not in recipes:
        raise UsageError(f"no training recipe {name}", hint=f"Known recipes: {', '.join(sorted(recipes))}")
    return recipes[name]
