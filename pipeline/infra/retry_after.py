"""The wait an HTTP 429 answer asks for in its Retry-After header (RFC 9110, section 10.2.3).

Shared by the clients that retry: the OpenAI-compatible teacher backend and the Zenodo client.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """The wait a Retry-After header asks for: delta-seconds or an HTTP date, clipped to [0, cap].
    None when there is no header or it cannot be read (then the caller's backoff applies)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap)
