"""OpenTelemetry tracing: a PRODUCER span per send, a CONSUMER span per message processed.

The trace context travels in the message context, injected by the
globally configured propagator (W3C ``traceparent``/``tracestate`` by
default) as plain context keys: the AMQP wire then carries
``_context_traceparent``, exactly as oslo.messaging 18.3 does, so a trace
crosses oslo.messaging and polymsg services both ways.

Spans follow OpenTelemetry's messaging semantic conventions. Only the
``opentelemetry-api`` distribution is needed (``pip install polymsg[otel]``);
spans go to the process's tracer provider (configured by the application,
the OpenTelemetry SDK or ``opentelemetry-instrument``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from polymsg._exceptions import RemoteError
from polymsg._observe import Operation, is_expected

__all__ = ["TracingObserver", "error_type", "span_name"]

#: The instrumentation scope of polymsg's spans.
SCOPE = "polymsg"

_NOTIFICATIONS = frozenset({"notify", "notification"})


def span_name(op: Operation) -> str:
    """``"<operation> <destination>"``: ``call compute``, ``notify notifications``,
    ``process compute`` (the method is the ``rpc.method`` attribute, not in the
    name, which stays low-cardinality)."""
    action = op.kind if op.kind in ("call", "cast", "fanout", "notify") else "process"
    return f"{action} {op.topic}" if op.topic else action


def error_type(exc: BaseException) -> str:
    """The class of the failure as spans and metrics name it: a
    :class:`~polymsg.RemoteError`'s remote class, else the exception's class."""
    if type(exc) is RemoteError and exc.exc_type:
        return exc.exc_type
    return type(exc).__name__


#: Span attributes taken as they are from the operation's target fields, when set.
_TARGET_ATTRIBUTES = (
    ("messaging.destination.name", "topic"),
    ("polymsg.target.exchange", "exchange"),
    ("polymsg.target.server", "server"),
    ("polymsg.target.version", "version"),
)


def _attributes(op: Operation, ctxt: Mapping[str, Any], operation_type: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": op.system,
        "messaging.operation.type": operation_type,
        "messaging.operation.name": op.kind if operation_type == "send" else "process",
    }
    for name, field in _TARGET_ATTRIBUTES:
        value = getattr(op, field)
        if value:
            attributes[name] = value
    if op.kind in _NOTIFICATIONS:  # the method is the event type
        if op.priority:
            attributes["polymsg.notification.priority"] = op.priority
        if op.method:
            attributes["polymsg.notification.event_type"] = op.method
    elif op.method:
        attributes["rpc.method"] = op.method
        if op.namespace:
            attributes["rpc.service"] = op.namespace
    request_id = ctxt.get("request_id")
    if isinstance(request_id, str):
        attributes["openstack.request_id"] = request_id[:128]
    return attributes


def _record(span: Span, exc: BaseException | None) -> None:
    """Put the outcome on ``span``: an error status for a failure, an event
    only for an exception the endpoint declared as expected."""
    if exc is None:
        return
    span.record_exception(exc, escaped=True)
    if is_expected(exc):
        span.set_attribute("polymsg.expected_exception", error_type(exc))
        return
    span.set_attribute("error.type", error_type(exc))
    span.set_status(Status(StatusCode.ERROR, f"{error_type(exc)}: {str(exc)[:200]}"))


class TracingObserver:
    """An observer (see :mod:`polymsg._observe`) making OpenTelemetry spans.

    ``tracer_provider``: where spans go; ``None``, the global provider.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        from polymsg import __version__

        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)

    def sending(self, op: Operation, ctxt: dict[str, Any]) -> AbstractContextManager[Any]:
        """A PRODUCER span, not made current (it may end on another thread);
        its context is injected into ``ctxt``."""
        span = self._tracer.start_span(span_name(op), kind=SpanKind.PRODUCER,
                                       attributes=_attributes(op, ctxt, "send"),
                                       record_exception=False, set_status_on_exception=False)
        propagate.inject(ctxt, context=trace.set_span_in_context(span))
        return _ending(span)

    def receiving(self, op: Operation, ctxt: Mapping[str, Any]) -> AbstractContextManager[Any]:
        """A CONSUMER span, child of the sender's, current while the endpoint
        runs (so the calls it makes continue the trace); one per notification
        of a batch, none of them current."""
        parent = propagate.extract(ctxt)
        span = self._tracer.start_span(span_name(op), context=parent, kind=SpanKind.CONSUMER,
                                       attributes=_attributes(op, ctxt, "process"),
                                       record_exception=False, set_status_on_exception=False)
        return _ending(span) if op.batch else _current(span)  # a batch has no one parent


@contextmanager
def _ending(span: Span) -> Iterator[Span]:
    try:
        yield span
    except BaseException as exc:
        _record(span, exc)
        raise
    finally:
        span.end()


@contextmanager
def _current(span: Span) -> Iterator[Span]:
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        _record(span, exc)
        raise
    finally:
        span.end()
        otel_context.detach(token)
