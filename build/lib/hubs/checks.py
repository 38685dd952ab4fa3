"""System checks of ``CONDUIT_RT`` values that would otherwise fail only at first use
(``manage.py check``, and every ``runserver``/``migrate``, run them)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error


def check_rate_limit(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``RATE_LIMIT`` parses in the ``limits`` notation; scope and strategy are known names."""
    from limits import parse

    from .conf import conduit_settings
    from .rate_limit import STRATEGIES

    errors: list[Error] = []
    rate = conduit_settings.RATE_LIMIT
    if rate:
        try:
            parse(str(rate))
        except ValueError as exc:
            errors.append(
                Error(
                    f"CONDUIT_RT['RATE_LIMIT'] = {rate!r} is not a rate: {exc}",
                    hint='Write it as the limits library does: "100/minute", "10 per second", "" for none.',
                    id="conduit_rt.E001",
                )
            )
    if conduit_settings.RATE_LIMIT_SCOPE not in ("connection", "user"):
        errors.append(
            Error(
                f"CONDUIT_RT['RATE_LIMIT_SCOPE'] = {conduit_settings.RATE_LIMIT_SCOPE!r}",
                hint='Use "connection" or "user".',
                id="conduit_rt.E002",
            )
        )
    if conduit_settings.RATE_LIMIT_STRATEGY not in STRATEGIES:
        errors.append(
            Error(
                f"CONDUIT_RT['RATE_LIMIT_STRATEGY'] = {conduit_settings.RATE_LIMIT_STRATEGY!r}",
                hint=f"Use one of {', '.join(sorted(STRATEGIES))}.",
                id="conduit_rt.E003",
            )
        )
    return errors
