"""The base every Tether document and resource model is built on.

Wire names follow Kubernetes conventions: camelCase with well-known acronyms kept
upper case (``vpcCIDR``, ``publicIP``, ``providerID``), so a document written for
``tether net check`` reads like a Kubernetes object and the REST API speaks the same
names. Python code uses snake_case attribute names throughout.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

#: Words rendered upper case when they are not the first word of a wire name.
ACRONYMS = {"cidr": "CIDR", "ip": "IP", "id": "ID", "url": "URL", "cpu": "CPU", "asn": "ASN"}


def wire_name(field: str) -> str:
    """Map a snake_case attribute to its camelCase wire name (``vpc_cidr`` → ``vpcCIDR``)."""
    first, *rest = field.split("_")
    return first + "".join(ACRONYMS.get(word, word.capitalize()) for word in rest)


class Model(BaseModel):
    """Base for all documents: strict about unknown fields, camelCase on the wire.

    Unknown fields are refused (``extra="forbid"``) so a misspelt field in a document
    is an error naming that field, not a silently ignored setting.
    """

    model_config = ConfigDict(
        alias_generator=wire_name,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=True,
    )
