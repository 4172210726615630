from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def ms(value) -> str:
    """A duration in milliseconds, readable: 850 ms, 3.2 s, 4.5 min."""
    if value is None or value == "":
        return "–"
    value = float(value)
    if value < 1:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 120_000:
        return f"{value / 1000:.1f} s"
    return f"{value / 60000:.1f} min"


@register.filter
def seconds(value) -> str:
    if value is None:
        return "–"
    value = float(value)
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


@register.filter
def short_id(value) -> str:
    return str(value)[:8]


@register.filter
def as_json(value) -> str:
    return json.dumps(value, default=str)
