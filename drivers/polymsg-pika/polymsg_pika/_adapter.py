"""polymsg's AMQP engine on pika: the I/O port (:mod:`polymsg._amqp_port`) over
pika's ``SelectConnection``.

Every class here is a thin wrapper: it turns the engine's calls into pika's
and pika's frames and ``BasicProperties`` into the port's plain values
(:class:`~polymsg._amqp_port.Delivered`, :class:`~polymsg._amqp_port.Returned`,
property mappings). The I/O thread is :class:`polymsg_pika._loop.IOThread`;
pika's exceptions reach the engine only through :mod:`polymsg_pika._errors`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pika
from pika import spec as pika_spec
from pika.adapters.select_connection import SelectConnection

from polymsg._amqp_connection import ConnectionSpec, Endpoint, Failure, TLSSpec
from polymsg._amqp_port import ConnectionEvents, Delivered, Done, Loop, Returned
from polymsg_pika import _errors, _fastpath
from polymsg_pika._loop import IOThread
from polymsg_pika._options import connection_parameters

__all__ = ["PikaAdapter"]


class _Properties(Mapping[str, Any]):
    """pika's ``BasicProperties`` as the port's mapping, absent ones left out (a
    view: a delivery's properties are read once or twice, never all of them)."""

    __slots__ = ("_properties",)

    def __init__(self, properties: Any) -> None:
        self._properties = properties

    def __getitem__(self, key: str) -> Any:
        value = vars(self._properties).get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = vars(self._properties).get(key)
        return default if value is None else value

    def __iter__(self) -> Iterator[str]:
        return (key for key, value in vars(self._properties).items() if value is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class PikaChannel:
    """A pika channel as a :class:`~polymsg._amqp_port.Channel`."""

    __slots__ = ("_channel", "_connection")

    def __init__(self, connection: PikaConnection) -> None:
        self._connection = connection
        self._channel: Any = None

    @property
    def is_open(self) -> bool:
        return bool(self._channel is not None and self._channel.is_open)

    @property
    def connection(self) -> PikaConnection:
        return self._connection

    def open(self, on_open: Callable[[PikaChannel], None]) -> None:
        self._channel = self._connection.pika.channel(
            on_open_callback=lambda _channel: on_open(self))

    def on_close(self, callback: Callable[[PikaChannel, BaseException], None]) -> None:
        self._channel.add_on_close_callback(lambda _channel, error: callback(self, error))

    def on_return(self, callback: Callable[[Returned], None]) -> None:
        def returned(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            callback(Returned(method.exchange, method.routing_key, int(method.reply_code),
                              str(method.reply_text), _Properties(properties), body))
        self._channel.add_on_return_callback(returned)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._channel.add_on_cancel_callback(
            lambda frame: callback(frame.method.consumer_tag))

    def confirm(self, on_confirm: Callable[[int, bool, bool], None], done: Done) -> None:
        def confirmed(frame: Any) -> None:
            method = frame.method
            on_confirm(int(method.delivery_tag), bool(method.multiple),
                       isinstance(method, pika_spec.Basic.Nack))
        self._channel.confirm_delivery(confirmed, callback=lambda _frame: done())

    def publish(self, exchange: str, routing_key: str, body: bytes,
                properties: Mapping[str, Any], mandatory: bool) -> None:
        self._channel.basic_publish(exchange, routing_key, body,
                                    pika.BasicProperties(**properties), mandatory=mandatory)

    def declare_exchange(self, name: str, type: str, *, passive: bool, durable: bool,
                         auto_delete: bool, done: Done) -> None:
        self._channel.exchange_declare(name, type, passive=passive, durable=durable,
                                       auto_delete=auto_delete, callback=lambda _f: done())

    def declare_queue(self, name: str, *, passive: bool, durable: bool, auto_delete: bool,
                      arguments: Mapping[str, Any], done: Done) -> None:
        self._channel.queue_declare(name, passive=passive, durable=durable,
                                    auto_delete=auto_delete, arguments=dict(arguments) or None,
                                    callback=lambda _f: done())

    def bind(self, queue: str, exchange: str, routing_key: str, done: Done) -> None:
        self._channel.queue_bind(queue, exchange, routing_key=routing_key,
                                 callback=lambda _f: done())

    def delete_queue(self, name: str, done: Done) -> None:
        self._channel.queue_delete(name, callback=lambda _f: done())

    def qos(self, prefetch_count: int, done: Done) -> None:
        self._channel.basic_qos(prefetch_count=prefetch_count, callback=lambda _f: done())

    def consume(self, queue: str, on_message: Callable[[PikaChannel, Delivered], None], *,
                auto_ack: bool, arguments: Mapping[str, Any] | None,
                done: Callable[[str], None]) -> str:
        def deliver(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            on_message(self, Delivered(method.consumer_tag, method.delivery_tag,
                                       method.redelivered, method.exchange, method.routing_key,
                                       _Properties(properties), body))
        return str(self._channel.basic_consume(
            queue, deliver, auto_ack=auto_ack,
            arguments=dict(arguments) if arguments is not None else None,
            callback=lambda frame: done(frame.method.consumer_tag)))

    def cancel(self, consumer_tag: str) -> None:
        self._channel.basic_cancel(consumer_tag)

    def ack(self, delivery_tag: int) -> None:
        self._channel.basic_ack(delivery_tag)

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        self._channel.basic_reject(delivery_tag, requeue=requeue)

    def nack(self, delivery_tag: int, requeue: bool) -> None:
        self._channel.basic_nack(delivery_tag, requeue=requeue)

    def close(self) -> None:
        self._channel.close()


class PikaConnection:
    """A pika ``SelectConnection`` as a :class:`~polymsg._amqp_port.Connection`."""

    __slots__ = ("pika",)

    def __init__(self) -> None:
        #: The pika connection (set once it was made).
        self.pika: Any = None

    @property
    def is_open(self) -> bool:
        return bool(self.pika.is_open)

    @property
    def is_closed(self) -> bool:
        return bool(self.pika.is_closed)

    @property
    def server_properties(self) -> Mapping[str, Any] | None:
        properties = getattr(self.pika, "server_properties", None)
        return properties if isinstance(properties, Mapping) else None

    def channel(self, on_open: Callable[[PikaChannel], None]) -> PikaChannel:
        channel = PikaChannel(self)
        channel.open(on_open)
        return channel

    def flush(self) -> None:
        _fastpath.flush(self.pika)

    def close(self) -> None:
        self.pika.close()


class PikaAdapter:
    """pika as the engine's :class:`~polymsg._amqp_port.Adapter` (one per transport)."""

    def __init__(self) -> None:
        self._contexts: dict[TLSSpec, ssl.SSLContext] = {}
        self._parameters: dict[tuple[Endpoint, str], pika.ConnectionParameters] = {}

    def loop(self, name: str) -> IOThread:
        return IOThread(name)

    def connect(self, loop: Loop, spec: ConnectionSpec, endpoint: Endpoint, name: str,
                events: ConnectionEvents) -> PikaConnection:
        assert isinstance(loop, IOThread), "pika connections run on a loop of this adapter"
        connection = PikaConnection()

        def opened(raw: Any) -> None:
            raw.add_on_connection_blocked_callback(
                lambda _c, frame: events.connection_blocked(getattr(frame.method, "reason",
                                                                    None)))
            raw.add_on_connection_unblocked_callback(
                lambda _c, _frame: events.connection_unblocked())
            events.connection_opened(connection)

        connection.pika = SelectConnection(
            self._parameters_of(spec, endpoint, name), on_open_callback=opened,
            on_open_error_callback=lambda _c, error: events.connection_failed(error),
            on_close_callback=lambda _c, error: events.connection_closed(error),
            custom_ioloop=loop.ioloop)
        return connection

    def _parameters_of(self, spec: ConnectionSpec, endpoint: Endpoint,
                       name: str) -> pika.ConnectionParameters:
        key = (endpoint, name)
        params = self._parameters.get(key)
        if params is None:
            context = None
            if spec.tls is not None:
                context = self._contexts.get(spec.tls)
                if context is None:
                    context = self._contexts[spec.tls] = spec.tls.context()
            params = self._parameters[key] = connection_parameters(spec, endpoint, name, context)
        return params

    def failure_of(self, error: BaseException | None, host: str) -> Failure:
        return _errors.failure_of(error, host)

    def describe(self, error: BaseException | None) -> str:
        return _errors.describe(error)

    def reply_code(self, error: BaseException | None) -> int | None:
        return _errors.reply_code(error)
