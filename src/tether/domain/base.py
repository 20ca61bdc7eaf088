"""The base every Tether document and resource model is built on.

Wire names follow Kubernetes conventions: camelCase with well-known acronyms kept
upper case (``vpcCIDR``, ``publicIP``, ``providerID``), so a document written for
``tether net check`` reads like a Kubernetes object and the REST API speaks the same
names. Python code uses snake_case attribute names throughout.
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

#: Integers the stores can hold (SQL BIGINT): anything outside is refused at the boundary
#: rather than overflowing in the database (a 500) or being stored and never served back.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

#: Words rendered upper case when they are not the first word of a wire name.
ACRONYMS = {"cidr": "CIDR", "ip": "IP", "id": "ID", "url": "URL", "cpu": "CPU", "asn": "ASN"}


def wire_name(field: str) -> str:
    """Map a snake_case attribute to its camelCase wire name (``vpc_cidr`` → ``vpcCIDR``)."""
    first, *rest = field.split("_")
    return first + "".join(ACRONYMS.get(word, word.capitalize()) for word in rest)


def _numeric(annotation: Any) -> bool:
    """Whether a field of this type takes numbers but not booleans (``int``, ``float | None``,
    ``str | int``, ...)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _numeric(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        return bool not in members and any(_numeric(m) for m in members)
    return annotation in (int, float)


def _refusal(loc: str, rule: str, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(rule, message), loc=(loc,), input=value)


class Model(BaseModel):
    """Base for all documents: strict about unknown fields, camelCase on the wire.

    Unknown fields are refused (``extra="forbid"``) so a misspelt field in a document
    is an error naming that field, not a silently ignored setting. Numeric fields refuse
    booleans (pydantic would read ``true`` as 1: ``"expiresIn": true`` became a
    one-second activation) and integers the stores cannot hold (beyond 64 bits), each
    named by its field, for every model at once.
    """

    model_config = ConfigDict(
        alias_generator=wire_name,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=True,
    )

    #: (attribute name, wire name) of each numeric field; computed once per class.
    __numeric_fields__: ClassVar[tuple[tuple[str, str], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.__numeric_fields__ = tuple(
            (name, info.alias or name)
            for name, info in cls.model_fields.items()
            if _numeric(info.annotation)
        )

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.__numeric_fields__:
            return data
        problems = []
        for name, alias in cls.__numeric_fields__:
            key = alias if alias in data else name
            value = data.get(key)
            if isinstance(value, bool):
                problems.append(
                    _refusal(key, "bool_not_number", "must be a number, not a boolean", value)
                )
            elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                problems.append(
                    _refusal(key, "int64_range", "must fit in 64 bits (at most 2^63 - 1)", value)
                )
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return data
