from __future__ import annotations

import json

from django import template

register = template.Library()


# (below this, divide by this, format) in turn; the last unit takes the rest.
_MS_UNITS = ((1, 1, "{:.2f} ms"), (1000, 1, "{:.0f} ms"), (120_000, 1000, "{:.1f} s"), (None, 60_000, "{:.1f} min"))
_SECOND_UNITS = ((120, 1, "{:.0f} s"), (7200, 60, "{:.0f} min"), (None, 3600, "{:.1f} h"))


def _in_units(value, units) -> str:
    if value is None or value == "":
        return "–"
    value = float(value)
    for below, divisor, form in units:
        if below is None or value < below:
            return form.format(value / divisor)
    raise AssertionError("the last unit has no bound")


@register.filter
def ms(value) -> str:
    """A duration in milliseconds, readable: 850 ms, 3.2 s, 4.5 min."""
    return _in_units(value, _MS_UNITS)


@register.filter
def seconds(value) -> str:
    """A duration in seconds, readable: 30 s, 5 min, 2.5 h."""
    return _in_units(value, _SECOND_UNITS)


@register.filter
def short_id(value) -> str:
    return str(value)[:8]


@register.filter
def as_json(value) -> str:
    return json.dumps(value, default=str)
