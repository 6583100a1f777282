"""Serializers: hooks turning user objects into JSON types and back."""

from __future__ import annotations

import abc
from typing import Any

__all__ = ["NoOpSerializer", "Serializer"]


class Serializer(abc.ABC):
    """Converts entities and contexts to JSON types before sending and back after receiving.

    A client applies ``serialize_context`` and ``serialize_entity`` to what it
    sends and ``deserialize_entity`` to a call's result; a server applies the
    reverse. Whatever ``serialize_*`` return must be JSON types.
    """

    @abc.abstractmethod
    def serialize_entity(self, ctxt: dict[str, Any], entity: Any) -> Any:
        """``entity`` as JSON types."""

    @abc.abstractmethod
    def deserialize_entity(self, ctxt: dict[str, Any], entity: Any) -> Any:
        """The object ``entity`` (JSON types) stands for."""

    @abc.abstractmethod
    def serialize_context(self, ctxt: dict[str, Any]) -> dict[str, Any]:
        """``ctxt`` as a JSON object."""

    @abc.abstractmethod
    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        """The context object ``ctxt`` stands for (passed to endpoints)."""


class NoOpSerializer(Serializer):
    """The default: passes everything through unchanged."""

    def serialize_entity(self, ctxt: dict[str, Any], entity: Any) -> Any:
        return entity

    def deserialize_entity(self, ctxt: dict[str, Any], entity: Any) -> Any:
        return entity

    def serialize_context(self, ctxt: dict[str, Any]) -> dict[str, Any]:
        return ctxt

    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        return ctxt
