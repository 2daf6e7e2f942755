"""The settings every loop takes besides its operators, each written once: the loops' public
signatures spell them out as keywords, and each loop gathers them here in one call
(``RunSettings.of(locals())``), so an option added to the loops travels through them as a field
of these classes, not as a keyword passed along at every step."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .state import CheckpointPath, Fitness, Log, Report, Resume


@dataclass(frozen=True)
class CheckpointSettings:
    """A loop's checkpoint keywords (see :func:`evocluster.engine.generational`), by their
    names."""

    checkpoint: CheckpointPath = None
    checkpoint_every: float | None = None
    checkpoint_every_generations: int | None = None
    resume: Resume = None


@dataclass(frozen=True)
class RunSettings:
    """What a loop evaluates, where and how, by the names of its keywords: the fitness, the
    executor, the seed, the weights, the log, the failure policy (``on_error``, ``penalty``),
    the statistics ``report`` and the checkpoint settings."""

    fitness: Fitness
    executor: cf.Executor
    seed: int
    weights: Sequence[float] = (1.0,)
    log: Log = None
    on_error: str | None = None
    penalty: Any = None
    report: Report = None
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)

    @classmethod
    def of(cls, keywords: Mapping[str, Any]) -> RunSettings:
        """The settings among a loop's ``keywords`` (its ``locals()`` on entry): every field
        whose name is a keyword it has."""
        mine = {f.name: keywords[f.name] for f in fields(cls) if f.name in keywords}
        checkpoints = {
            f.name: keywords[f.name] for f in fields(CheckpointSettings) if f.name in keywords
        }
        return cls(**mine, checkpoints=CheckpointSettings(**checkpoints))
