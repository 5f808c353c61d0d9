"""Framework-free pieces of the WAGE contract (``docs/contract.md``) that both packages use.

``wage_torch`` and ``wage_jax`` mirror each other's API; what they must agree on and that involves
no tensor arithmetic lives here once: argument validation (docs/contract.md §4), the initializer's limit and
per-layer scale (docs/contract.md §3), and the paper's learning-rate schedule.
"""

from wage_spec.config import WAGEConfig
from wage_spec.formulas import clip_delta, qg_norm, qw_divides_by_scale
from wage_spec.init_math import fan_in, float_init_limit, wage_init_limits
from wage_spec.schedule import paper_lr, paper_lr_epochs
from wage_spec.validation import (
    FULL_PRECISION,
    MAX_BITS,
    MAX_LR,
    MIN_BITS,
    ROUNDING_MODES,
    check_bits,
    check_clip_bits,
    check_learning_rate,
    check_lr,
    check_mode,
    check_randomness,
    check_scale,
    draws_randomness,
)

__all__ = [
    "FULL_PRECISION",
    "MAX_BITS",
    "MAX_LR",
    "MIN_BITS",
    "ROUNDING_MODES",
    "WAGEConfig",
    "check_bits",
    "check_clip_bits",
    "check_learning_rate",
    "check_lr",
    "check_mode",
    "check_randomness",
    "check_scale",
    "clip_delta",
    "draws_randomness",
    "fan_in",
    "float_init_limit",
    "paper_lr",
    "paper_lr_epochs",
    "qg_norm",
    "qw_divides_by_scale",
    "wage_init_limits",
]
