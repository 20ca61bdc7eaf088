"""``KubeClient``: the one place where Tether talks HTTP to a Kubernetes API server.

A thin, synchronous layer over lightkube's ``Client``. Why a layer at all:

- one error vocabulary: every failure is a :mod:`tether.kube.errors` exception
  (``NotFound``, ``Conflict``, ``Unavailable``, ... with ``retryable``), never a
  lightkube ``ApiError`` or an httpx2 exception;
- one place for Tether's conventions: the field manager (``tether``), how patches
  are named, list results that keep their ``resourceVersion`` for a following watch;
- a watch that does one request and ends when the server ends it, so the caller (a
  list-then-watch loop) owns resumption, ``Gone`` (410) handling and backoff, and the
  HTTP stream is always closed (lightkube's own watch reconnects forever and leaves
  the stream to the garbage collector).

Objects are lightkube resources (``lightkube.resources.core_v1.Node`` and friends,
or generic resources for CRDs); methods are generic over them.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, cast

import httpx2
import msgspec
from lightkube import ALL_NS, Client, KubeConfig, NotReadyError, SingleConfig
from lightkube.config.client_adapter import Client as _http_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.core import decoders
from lightkube.core.resource import (
    NamespacedResource,
    NamespacedSubResource,
    Resource,
    api_info,
)
from lightkube.core.selector import build_selector
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.certificates_v1 import CertificateSigningRequestCondition
from lightkube.models.meta_v1 import DeleteOptions, ObjectMeta, Status
from lightkube.resources.certificates_v1 import (
    CertificateSigningRequest,
    CertificateSigningRequestApproval,
)
from lightkube.resources.core_v1 import Pod, ServiceAccountToken
from lightkube.types import PatchType as _LkPatchType

from tether.kube.errors import (
    ConfigError,
    Conflict,
    Invalid,
    KubeError,
    NotFound,
    Unavailable,
    from_exception,
    from_status,
)

__all__ = [
    "ALL_NAMESPACES",
    "DEFAULT_FIELD_MANAGER",
    "KubeClient",
    "ObjectList",
    "PatchType",
    "ServerVersion",
    "ServiceAccountTokenGrant",
    "Watch",
    "WatchEvent",
]

#: Pass as ``namespace`` to list or watch a namespaced resource in every namespace.
ALL_NAMESPACES: str = ALL_NS
#: ``fieldManager`` recorded on everything Tether writes (server-side apply owner).
DEFAULT_FIELD_MANAGER = "tether"

R = TypeVar("R", bound=Resource)

#: ``merge`` = JSON merge patch (RFC 7386), ``strategic`` = Kubernetes strategic merge
#: patch (built-in types only: lists merge by key), ``json`` = JSON patch (RFC 6902).
PatchType = Literal["merge", "strategic", "json"]
_PATCH_TYPES: dict[str, _LkPatchType] = {
    "merge": _LkPatchType.MERGE,
    "strategic": _LkPatchType.STRATEGIC,
    "json": _LkPatchType.JSON,
}

#: Label/field selector: ``{"key": "value"}`` (equals), ``{"key": None}`` (exists).
Selector = Mapping[str, str | None]

WatchEventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class ServerVersion:
    """The API server's ``/version``."""

    major: str
    minor: str
    git_version: str
    git_commit: str = ""
    build_date: str = ""
    go_version: str = ""
    platform: str = ""

    @property
    def semver(self) -> str:
        """``git_version`` without the leading ``v`` (``"1.37.2"``)."""
        return self.git_version.removeprefix("v")


@dataclass(frozen=True)
class ServiceAccountTokenGrant:
    """A token the TokenRequest API issued for a service account."""

    token: str
    expiration: dt.datetime


@dataclass
class ObjectList(Generic[R]):
    """The items of a list call and the ``resourceVersion`` to start a watch from."""

    items: list[R]
    resource_version: str

    def __iter__(self) -> Iterator[R]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class WatchEvent(Generic[R]):
    """One change: ``ADDED``, ``MODIFIED`` or ``DELETED`` (object as last seen)."""

    type: WatchEventType
    object: R

    @property
    def resource_version(self) -> str | None:
        meta = getattr(self.object, "metadata", None)
        rv = getattr(meta, "resourceVersion", None)
        return rv if isinstance(rv, str) else None


#: Resource types whose msgspec decoders are built (see :func:`_warm_decoders`).
_warm: set[type] = set()
_warm_lock = threading.Lock()


def _warm_decoders(*types: type) -> None:
    """Build lightkube's msgspec decoders for ``types`` one thread at a time.

    msgspec builds a type's decoding information on its first use, and two threads doing
    that at once for overlapping types (Node and Pod share ObjectMeta) crashed the
    interpreter with a segmentation fault here. Building them under one lock, once per
    type, leaves only concurrent reads of finished decoders, which are safe.
    """
    cold = [t for t in types if t not in _warm]
    if not cold:
        return
    with _warm_lock:
        for res in cold:
            if res in _warm:
                continue
            for probe in (b"{}", b'{"items": []}'):
                decode = decoders.decode_object if probe == b"{}" else decoders.decode_list
                with suppress(msgspec.MsgspecError, TypeError, ValueError, KeyError):
                    decode(probe, res)  # builds the decoder even when {} is not valid
            _warm.add(res)


@contextmanager
def _translated(*decoded: type) -> Iterator[None]:
    """Re-raise lightkube/httpx2 failures as :mod:`tether.kube.errors` exceptions.

    ``decoded`` are the resource types the call decodes; their decoders are built first
    (:func:`_warm_decoders`).
    """
    _warm_decoders(Status, *decoded)
    try:
        yield
    except httpx2.HTTPError as exc:  # lightkube's ApiError is an httpx2.HTTPStatusError
        mapped = from_exception(exc)
        if mapped is None:  # pragma: no cover - every httpx2.HTTPError maps
            raise
        raise mapped from exc


def _is_namespaced(res: type[Resource]) -> bool:
    return issubclass(res, NamespacedResource | NamespacedSubResource)


class Watch(Generic[R]):
    """One watch request, iterated once; a context manager that closes the stream.

    Iteration yields :class:`WatchEvent` until the server ends the request (after
    ``timeout_seconds``, or its own limit), then stops. :attr:`resource_version`
    is the newest version seen, bookmarks included: pass it to the next
    :meth:`KubeClient.watch` to resume. ``Gone`` means it expired: list again.
    Made by :meth:`KubeClient.watch`.
    """

    def __init__(
        self,
        http: httpx2.Client,
        res: type[R],
        path: str,
        params: Mapping[str, str],
        timeout: httpx2.Timeout,
        resource_version: str | None,
    ) -> None:
        self._http = http
        self._res = res
        self._path = path
        self._params = dict(params)
        self._timeout = timeout
        self.resource_version = resource_version
        self._response: httpx2.Response | None = None
        self._started = False
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP stream; iteration stops (also when called from another thread).

        Closing a socket does not wake a thread blocked reading it, so the socket is
        shut down first: the reader sees end-of-stream and the iteration ends quietly.
        """
        self._closed = True
        response = self._response
        if response is not None:
            _shutdown(response)
            response.close()
            self._response = None

    def __iter__(self) -> Iterator[WatchEvent[R]]:
        if self._started:
            raise RuntimeError("a Watch can be iterated once")
        self._started = True
        if self._closed:
            return  # closed before it began
        params = dict(self._params)
        if self.resource_version is not None:
            params["resourceVersion"] = self.resource_version
        try:
            with _translated(self._res):
                request = self._http.build_request(
                    "GET", self._path, params=params, timeout=self._timeout
                )
                response = self._http.send(request, stream=True)
                self._response = response
                if response.is_error:
                    response.read()
                    raise _status_error(response)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    event = self._decode(line)
                    if event is not None:
                        yield event
        except httpx2.StreamClosed:
            return  # closed by close() while iterating
        except KubeError:
            if self._closed:
                return  # the read failed because close() shut the stream down
            raise
        finally:
            self.close()

    def _decode(self, line: str) -> WatchEvent[R] | None:
        raw = decoders.decode_watch_event(line.encode())
        if raw.type == "ERROR":
            status = decoders.decode_status(raw.object)
            details = status.details.to_dict() if status.details is not None else None
            raise from_status(
                status.code, status.message or "", reason=status.reason, details=details
            )
        if raw.type == "BOOKMARK":
            # A bookmark carries only metadata.resourceVersion: no object to yield.
            meta = json.loads(bytes(raw.object)).get("metadata") or {}
            rv = meta.get("resourceVersion")
            if isinstance(rv, str):
                self.resource_version = rv
            return None
        obj = cast(R, decoders.decode_object(raw.object, self._res))
        event: WatchEvent[R] = WatchEvent(type=cast(WatchEventType, raw.type), object=obj)
        if event.resource_version is not None:
            self.resource_version = event.resource_version
        return event


def _shutdown(response: httpx2.Response) -> None:
    """Shut down the socket under a streaming response, waking a blocked reader."""
    stream = response.extensions.get("network_stream")
    get_info = getattr(stream, "get_extra_info", None)
    sock = get_info("socket") if get_info is not None else None
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _status_error(response: httpx2.Response) -> KubeError:
    """A KubeError from an error response whose body may be a ``Status``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        details = body.get("details")
        return from_status(
            response.status_code,
            str(body.get("message") or ""),
            reason=body.get("reason"),
            details=details if isinstance(details, dict) else None,
        )
    return from_status(response.status_code, response.reason_phrase or response.text[:200])


def _load_config(
    kubeconfig: str | os.PathLike[str] | Mapping[str, Any], context: str | None
) -> SingleConfig:
    """Read a kubeconfig (a file or its parsed mapping); any flaw is a :class:`ConfigError`.

    lightkube raises YAML, key, type and its own config errors for a bad kubeconfig; one
    permanent error type lets a caller (the controller manager) isolate that cluster.
    """
    where = "kubeconfig" if isinstance(kubeconfig, Mapping) else f"kubeconfig {kubeconfig}"
    try:
        config = (
            KubeConfig.from_dict(dict(kubeconfig))
            if isinstance(kubeconfig, Mapping)
            else KubeConfig.from_file(os.fspath(kubeconfig))
        )
        single: SingleConfig | None = config.get(context_name=context)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from exc
    except Exception as exc:  # yaml.YAMLError, KeyError, TypeError, lightkube.ConfigError
        raise ConfigError(f"{where} is not usable: {type(exc).__name__}: {exc}") from exc
    if single is None:  # pragma: no cover - get() raises ConfigError instead
        raise ConfigError(f"{where} has no usable context")
    return single


class KubeClient:
    """A Kubernetes API client built from a kubeconfig (a path or the parsed mapping).

    *context* picks a kubeconfig context (default: current-context); *namespace*
    overrides the context's default namespace. *timeout* (seconds) bounds connect,
    read and write of every request except a watch's reads.

    All methods raise :mod:`tether.kube.errors` exceptions. Use as a context manager
    or call :meth:`close`.
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | Mapping[str, Any],
        *,
        context: str | None = None,
        namespace: str | None = None,
        field_manager: str = DEFAULT_FIELD_MANAGER,
        timeout: float = 10.0,
    ) -> None:
        single = _load_config(kubeconfig, context)
        self._config = single
        self.field_manager = field_manager
        self.timeout = timeout
        self._lk = Client(
            single,
            namespace=namespace,
            timeout=httpx2.Timeout(timeout),
            field_manager=field_manager,
            trust_env=False,
        )
        # lightkube has no raw-request API: /version and watches use an httpx2 client
        # built by lightkube's own adapter from the same config (same TLS and auth).
        self._http = _http_client(
            single, ConnectionParams(timeout=httpx2.Timeout(timeout), trust_env=False)
        )

    # -- life cycle --------------------------------------------------------------------

    def close(self) -> None:
        """Release both connection pools."""
        self._lk.close()
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def namespace(self) -> str:
        """The namespace used when a namespaced call gives none."""
        ns: str = self._lk.namespace
        return ns

    @property
    def server(self) -> str:
        """The API server URL from the kubeconfig."""
        return str(self._config.cluster.server)

    # -- reads -----------------------------------------------------------------------------

    def server_version(self) -> ServerVersion:
        """``GET /version``: also the cheapest "is the API server there?" probe."""
        with _translated():
            response = self._http.get("/version")
            if response.is_error:
                raise _status_error(response)
            data = response.json()
        return ServerVersion(
            major=str(data.get("major", "")),
            minor=str(data.get("minor", "")),
            git_version=str(data.get("gitVersion", "")),
            git_commit=str(data.get("gitCommit", "")),
            build_date=str(data.get("buildDate", "")),
            go_version=str(data.get("goVersion", "")),
            platform=str(data.get("platform", "")),
        )

    def get(self, res: type[R], name: str, *, namespace: str | None = None) -> R:
        """Read one object; ``NotFound`` if it does not exist."""
        lk: Any = self._lk
        with _translated(res):
            return cast(R, lk.get(res, name, namespace=namespace))

    def list(
        self,
        res: type[R],
        *,
        namespace: str | None = None,
        labels: Selector | None = None,
        fields: Selector | None = None,
    ) -> ObjectList[R]:
        """List objects (all pages); *namespace* may be :data:`ALL_NAMESPACES`."""
        lk: Any = self._lk
        with _translated(res):
            iterable = lk.list(
                res,
                namespace=namespace,
                labels=dict(labels) if labels else None,
                fields=dict(fields) if fields else None,
            )
            items = cast(list[R], list(iterable))
        try:
            rv = str(iterable.resourceVersion)
        except NotReadyError:  # pragma: no cover - set once the first page is read
            rv = ""
        return ObjectList(items=items, resource_version=rv)

    def watch(
        self,
        res: type[R],
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        labels: Selector | None = None,
        fields: Selector | None = None,
        timeout_seconds: int | None = None,
        bookmarks: bool = True,
    ) -> Watch[R]:
        """Open a watch (lazily, on iteration) from *resource_version*.

        With *resource_version* (usually :attr:`ObjectList.resource_version`) only
        later changes arrive; without it the server first sends an ``ADDED`` for
        every existing object. *timeout_seconds* asks the server to end the watch
        after that long. Errors while streaming are raised from the iteration:
        ``Gone`` means the version expired (list again).
        """
        info = api_info(res)
        if "watch" not in info.verbs:
            raise ValueError(f"{res.__name__} cannot be watched")
        base = info.resource
        parts = ["api", base.version] if base.group == "" else ["apis", base.group, base.version]
        if _is_namespaced(res) and namespace != ALL_NAMESPACES:
            parts += ["namespaces", namespace or self.namespace]
        parts.append(info.plural)
        params = {"watch": "true"}
        if bookmarks:
            params["allowWatchBookmarks"] = "true"
        if labels:
            params["labelSelector"] = build_selector(dict(labels))
        if fields:
            params["fieldSelector"] = build_selector(dict(fields), for_fields=True)
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        read_timeout = None if timeout_seconds is None else timeout_seconds + self.timeout
        timeout = httpx2.Timeout(self.timeout, read=read_timeout)
        return Watch(self._http, res, "/" + "/".join(parts), params, timeout, resource_version)

    # -- writes ----------------------------------------------------------------------------

    def create(self, obj: R, *, namespace: str | None = None, dry_run: bool = False) -> R:
        """Create *obj*; ``Conflict`` (``already_exists``) if the name is taken."""
        lk: Any = self._lk
        with _translated(type(obj)):
            return cast(R, lk.create(obj, namespace=namespace, dry_run=dry_run))

    def replace(self, obj: R, *, namespace: str | None = None, dry_run: bool = False) -> R:
        """Update (PUT) *obj*; ``Conflict`` if its ``metadata.resourceVersion`` is stale."""
        lk: Any = self._lk
        with _translated(type(obj)):
            return cast(R, lk.replace(obj, namespace=namespace, dry_run=dry_run))

    def patch(
        self,
        res: type[R],
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        dry_run: bool = False,
    ) -> R:
        """Patch one object (*res* may be a subresource such as ``Pod.Status``).

        *patch* is a mapping for ``merge``/``strategic``, a list of operations for
        ``json``. A ``json`` patch with a ``test`` operation (or a merge patch
        carrying ``metadata.resourceVersion``) gives optimistic locking: ``Conflict``
        / ``Invalid`` when the object changed.
        """
        body: Any = [dict(op) for op in patch] if isinstance(patch, Sequence) else dict(patch)
        if patch_type == "json" and not isinstance(body, list):
            raise ValueError("a json patch is a list of operations")
        if patch_type != "json" and isinstance(body, list):
            raise ValueError(f"a {patch_type} patch is a mapping")
        lk: Any = self._lk
        with _translated(res):
            return cast(
                R,
                lk.patch(
                    res,
                    name,
                    body,
                    namespace=namespace,
                    patch_type=_PATCH_TYPES[patch_type],
                    dry_run=dry_run,
                ),
            )

    def apply(
        self,
        obj: R,
        *,
        namespace: str | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> R:
        """Server-side apply *obj* as :attr:`field_manager` (create or update).

        Send only the fields Tether owns. ``Conflict`` if another manager owns one of
        them, unless *force*.
        """
        lk: Any = self._lk
        with _translated(type(obj)):
            return cast(
                R,
                lk.apply(
                    obj,
                    namespace=namespace,
                    field_manager=self.field_manager,
                    force=force,
                    dry_run=dry_run,
                ),
            )

    # -- cluster-scoped objects as plain data (CRDs and their custom resources) -----------

    @staticmethod
    def _custom_path(api_version: str, plural: str, name: str | None = None) -> str:
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}/{plural}" if group else f"/api/{version}/{plural}"
        return path if name is None else f"{path}/{name}"

    def _custom_request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        with _translated():
            response = self._http.request(method, path, params=params, **kwargs)
            if response.is_error:
                raise _status_error(response)
            return cast(dict[str, Any], response.json())

    def apply_object(
        self, plural: str, obj: Mapping[str, Any], *, force: bool = False
    ) -> dict[str, Any]:
        """Server-side apply a cluster-scoped object given as data (its ``apiVersion``,
        ``kind``, ``metadata.name`` and the fields Tether owns), as :attr:`field_manager`.

        ``fieldValidation=Strict``: a field the server's schema does not know is refused
        (``Invalid``) instead of silently dropped, so a CRD's schema judges every field.
        """
        path = self._custom_path(str(obj["apiVersion"]), plural, str(obj["metadata"]["name"]))
        params = {"fieldManager": self.field_manager, "fieldValidation": "Strict"}
        if force:
            params["force"] = "true"
        try:
            return self._custom_request(
                "PATCH",
                path,
                params=params,
                content=json.dumps(obj).encode(),
                headers={"Content-Type": "application/apply-patch+yaml"},
            )
        except Unavailable as exc:
            # The API server answers an apply with a field its schema lacks with a 500
            # ("failed to create typed patch object ... field not declared in schema"):
            # a refusal of the object, which no retry changes.
            if "failed to create typed patch object" not in exc.message:
                raise
            raise Invalid(exc.message, status_code=exc.status_code, reason="Invalid") from exc

    def list_objects(
        self, api_version: str, plural: str, *, labels: Selector | None = None
    ) -> builtins.list[dict[str, Any]]:
        """List cluster-scoped objects as data (one page: Tether's own, a few per pool)."""
        params = {"labelSelector": build_selector(dict(labels))} if labels else None
        body = self._custom_request("GET", self._custom_path(api_version, plural), params=params)
        return list(body.get("items") or [])

    def delete_object(self, api_version: str, plural: str, name: str) -> None:
        """Delete a cluster-scoped object given by name; gone already is fine."""
        with suppress(NotFound):
            self._custom_request("DELETE", self._custom_path(api_version, plural, name))

    def delete(
        self,
        res: type[Resource],
        name: str,
        *,
        namespace: str | None = None,
        grace_period: int | None = None,
        missing_ok: bool = False,
        dry_run: bool = False,
    ) -> None:
        """Delete one object; ``NotFound`` if absent unless *missing_ok*."""
        lk: Any = self._lk
        try:
            with _translated(res):
                lk.delete(
                    res, name, namespace=namespace, grace_period=grace_period, dry_run=dry_run
                )
        except NotFound:
            if not missing_ok:
                raise

    def evict(
        self,
        name: str,
        namespace: str | None = None,
        *,
        grace_period: int | None = None,
        dry_run: bool = False,
    ) -> None:
        """Evict a Pod through the Eviction API, which honours PodDisruptionBudgets.

        ``TooManyRequests`` (retryable) when a budget forbids it right now;
        ``NotFound`` if the Pod is gone.
        """
        ns = namespace or self.namespace
        options = (
            DeleteOptions(gracePeriodSeconds=grace_period) if grace_period is not None else None
        )
        eviction = Pod.Eviction(
            metadata=ObjectMeta(name=name, namespace=ns),
            deleteOptions=options,
        )
        lk: Any = self._lk
        with _translated(Pod.Eviction):
            lk.create(eviction, name=name, namespace=ns, dry_run=dry_run)

    def request_token(
        self,
        service_account: str,
        namespace: str,
        *,
        expiration_seconds: int = 3600,
        audiences: Sequence[str] = (),
    ) -> ServiceAccountTokenGrant:
        """Issue a token for a service account (TokenRequest API, ``serviceaccounts/token``).

        The API server may shorten *expiration_seconds* (its
        ``--service-account-max-token-expiration``); the grant says what it chose.
        *audiences* empty means the API server's own.
        """
        request = ServiceAccountToken(
            metadata=ObjectMeta(name=service_account, namespace=namespace),
            spec=TokenRequestSpec(audiences=list(audiences), expirationSeconds=expiration_seconds),
        )
        lk: Any = self._lk
        with _translated(ServiceAccountToken):
            result = lk.create(request, name=service_account, namespace=namespace)
        status = result.status
        if status is None or not status.token:  # pragma: no cover - the API always answers
            raise KubeError("the TokenRequest API returned no token")
        return ServiceAccountTokenGrant(token=status.token, expiration=status.expirationTimestamp)

    def set_csr_approval(
        self, name: str, *, approved: bool, reason: str, message: str, attempts: int = 5
    ) -> CertificateSigningRequest:
        """Approve or deny a CSR through its ``/approval`` subresource.

        Adds an ``Approved`` (or ``Denied``) condition with *reason* and *message*. A
        CSR that already carries either condition is returned unchanged (the API
        forbids flipping a decision). Re-reads and retries on ``Conflict``.
        """
        kind = "Approved" if approved else "Denied"
        last: Conflict | None = None
        for _ in range(max(1, attempts)):
            csr = self.get(CertificateSigningRequest, name)
            status = csr.status
            conditions = list(status.conditions or []) if status is not None else []
            if any(c.type in ("Approved", "Denied") for c in conditions):
                return csr
            conditions.append(
                CertificateSigningRequestCondition(
                    type=kind, status="True", reason=reason, message=message
                )
            )
            body = csr.to_dict()
            body.setdefault("status", {})["conditions"] = [c.to_dict() for c in conditions]
            approval = CertificateSigningRequestApproval.from_dict(body)
            lk: Any = self._lk
            try:
                with _translated(CertificateSigningRequestApproval):
                    updated = lk.replace(approval)
            except Conflict as exc:
                last = exc
                continue
            return cast(
                CertificateSigningRequest, CertificateSigningRequest.from_dict(updated.to_dict())
            )
        assert last is not None
        raise last
