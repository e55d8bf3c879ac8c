"""The bounds of every sampling argument and sampler setting, in one place (no torch here).

Checked by `dlm.config.sampler_settings` (so by the config's variants, `dlm.sampling.run_sampler`, the Python
API and `dlm sample`) and by `check_sample_args` (the API, the CLI and the `sample` rule's script). The config
schema (config/schema.yaml: sampling.num_samples, sampling.batch_size, the plan's steps and
sampling.variants.*) states the same bounds for the config file; tests/test_bad_input.py checks that the two
accept and refuse the same values. Every refusal is one line naming the argument, the value and what was
expected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any


def _int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


CONDITIONS = ("none", "prefix", "suffix", "infill")
NUCLEUS_RULES = ("keep_crossing", "drop_crossing")

# name -> (accepts the value, what is expected)
Rule = tuple[Callable[[Any], bool], str]
ARG_RULES: dict[str, Rule] = {
    "num_samples": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 (or None: all samples at once)"),
    "seed": (_int, "an integer"),
}
SETTING_RULES: dict[str, Rule] = {
    "nucleus_p": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1] (1 = no nucleus filter)"),
    "nucleus_rule": (lambda v: v in NUCLEUS_RULES, f"one of {list(NUCLEUS_RULES)}"),
    "condition": (lambda v: v in CONDITIONS, f"one of {list(CONDITIONS)}"),
    "self_correct": (lambda v: isinstance(v, bool), "true or false"),
    "sc_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "sc_temperature": (lambda v: _num(v) and v > 0, "a number > 0"),
    "sc_t0": (lambda v: _num(v) and 0 < v < 1, "a number in (0, 1)"),
    "sc_patience": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "sc_tokens_per_step": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "sc_early_stopping": (lambda v: isinstance(v, bool), "true or false"),
    "eta": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "t_on": (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "t_off": (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "alpha_on": (lambda v: _num(v) and 0 < v < 1, "a number in (0, 1)"),
    "kappa": (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "stride_length": (lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 (or null: half the block)"),
    "num_strides": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "min_p": (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]"),
}


class SettingError(ValueError):
    """A sampling argument or setting out of its bounds; args: (message, name, value)."""

    def __str__(self) -> str:
        return str(self.args[0])


def check(name: str, value: Any, rules: Mapping[str, Rule] = SETTING_RULES, label: str | None = None) -> None:
    """Raise SettingError if `value` is not what `name` takes (names without a rule pass); the message names
    `label` (the caller's name of the argument) if given."""
    rule = rules.get(name)
    if rule is not None and not rule[0](value):
        raise SettingError(f"{label or name} = {value!r} is invalid: expected {rule[1]}", name, value)


def check_settings(settings: Mapping[str, Any]) -> None:
    """Every setting of `settings` within its bounds (`SETTING_RULES`)."""
    for key, value in settings.items():
        check(key, value)


def check_sample_args(**args: Any) -> None:
    """num_samples, steps, batch_size and seed (those given) within their bounds (`ARG_RULES`)."""
    for key, value in args.items():
        check(key, value, ARG_RULES)
