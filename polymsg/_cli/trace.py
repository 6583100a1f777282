"""Reading the W3C trace context a message carries, for ``listen --trace``.

OpenTelemetry-traced senders (oslo.messaging 18.3 and later, polymsg with
tracing on) put a W3C ``traceparent`` in the request context; on the AMQP
wire it is the ``_context_traceparent`` key, and a receiver finds it as
``ctxt["traceparent"]``. This module parses it by the W3C Trace Context rules
without OpenTelemetry: the command line shows trace ids whether or not
OpenTelemetry is installed. The value comes from the network, so anything
that is not a valid traceparent is reported as invalid (clipped), never
trusted and never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["TraceParent", "describe", "parse_traceparent", "trace_of"]

#: Context keys that may hold the traceparent (the second as it is on the AMQP wire).
KEYS = ("traceparent", "_context_traceparent")
#: How much of an invalid value is shown.
SHOWN = 64

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class TraceParent:
    """A valid traceparent: the trace it belongs to, the sending span, the sampled flag."""

    trace_id: str
    span_id: str
    sampled: bool


def parse_traceparent(value: object) -> TraceParent | None:
    """The trace context in ``value``, or None when it is not a valid W3C traceparent
    (``VERSION-TRACE_ID-PARENT_ID-FLAGS``: 2, 32, 16 and 2 lowercase hex digits,
    version not ``ff``, ids not all zeros; a later version may append fields)."""
    if not isinstance(value, str) or len(value) < 55 or len(value) > 512:
        return None
    version, trace_id, span_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not all(_HEX.fullmatch(part) for part in (version, trace_id, span_id, flags)):
        return None
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55] != "-":
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 1))


def trace_of(ctxt: Any) -> tuple[TraceParent | None, str | None]:
    """``(trace, None)`` for a valid traceparent in ``ctxt``, ``(None, shown)`` for an
    invalid one (``shown`` is its clipped repr), ``(None, None)`` when there is none."""
    if not isinstance(ctxt, dict):
        return None, None
    for key in KEYS:
        if key in ctxt:
            value = ctxt[key]
            found = parse_traceparent(value)
            if found is not None:
                return found, None
            shown = repr(value)
            return None, shown if len(shown) <= SHOWN else shown[:SHOWN] + "..."
    return None, None


def describe(ctxt: Any) -> str:
    """``trace=<trace id>``, ``trace=-`` (none) or ``trace=invalid(<value>)``, for a line."""
    found, invalid = trace_of(ctxt)
    if found is not None:
        return f"trace={found.trace_id}"
    return "trace=-" if invalid is None else f"trace=invalid({invalid})"


def as_json(ctxt: Any) -> dict[str, Any] | None:
    """The trace for ``--json`` output: ids and flag, ``{"invalid": ...}`` or None."""
    found, invalid = trace_of(ctxt)
    if found is not None:
        return {"trace_id": found.trace_id, "span_id": found.span_id,
                "sampled": found.sampled}
    return None if invalid is None else {"invalid": invalid}
