"""Errors, translated once, at the edge.

Inside the gateway, code raises the domain errors below (or gets an ``ErrorInfo`` back from a
worker, turned into one by ``from_info``); only routes and their dependencies raise
``HTTPException``. ``TABLE`` says, for every error code, the HTTP status, the OpenAI error type
(``/v1`` answers in OpenAI's shape) and whether a stream's ``error`` event carries it; the
handlers ``install`` adds are the only place an exception becomes a response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from schemas.messages import ErrorInfo

OPENAI_PREFIX = "/v1/"


@dataclass(frozen=True)
class Translation:
    status: int
    openai_type: str


TABLE: dict[str, Translation] = {
    "bad_request": Translation(400, "invalid_request_error"),
    "unauthorized": Translation(401, "authentication_error"),
    "forbidden": Translation(403, "permission_error"),
    "not_found": Translation(404, "invalid_request_error"),
    "conflict": Translation(409, "invalid_request_error"),
    "too_large": Translation(413, "invalid_request_error"),
    "unsupported": Translation(415, "invalid_request_error"),
    "invalid": Translation(422, "invalid_request_error"),
    "rate_limited": Translation(429, "rate_limit_error"),
    # A stage that failed or is down is the pipeline's problem, and it says so: never a 500.
    "internal": Translation(503, "server_error"),
    "unavailable": Translation(503, "server_error"),
    "expired": Translation(504, "server_error"),
}
_CODE_OF_STATUS = {t.status: code for code, t in reversed(TABLE.items())}


def code_of_status(status: int) -> str:
    return _CODE_OF_STATUS.get(status, "bad_request" if status < 500 else "unavailable")


class OlympusError(Exception):
    """A domain error: what went wrong, in a sentence for the caller. ``openai_code`` is the
    machine-readable ``code`` an OpenAI client sees (``model_not_found``...)."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, openai_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.openai_code = openai_code

    @property
    def status(self) -> int:
        return TABLE[self.code].status

    @property
    def headers(self) -> dict[str, str] | None:
        return None


class BadRequest(OlympusError):
    code = "bad_request"


class NotFound(OlympusError):
    code = "not_found"


class Conflict(OlympusError):
    code = "conflict"


class TooLarge(OlympusError):
    code = "too_large"


class Invalid(OlympusError):
    code = "invalid"


class Unavailable(OlympusError):
    """Nobody answered in time, or a stage is down: a 503, not a hang."""

    code = "unavailable"


class Expired(OlympusError):
    code = "expired"


class Unauthorized(OlympusError):
    code = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(OlympusError):
    code = "forbidden"


class RateLimited(OlympusError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, openai_code="rate_limit_exceeded")
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Internal(OlympusError):
    code = "internal"


_BY_CODE: dict[str, type[OlympusError]] = {
    cls.code: cls for cls in (BadRequest, NotFound, TooLarge, Invalid, Unavailable, Expired)
}


def from_info(info: ErrorInfo) -> OlympusError:
    """A worker's error answer as the domain error it stands for."""
    return _BY_CODE.get(info.code, Internal)(info.message)


def openai_body(code: str, message: str, openai_code: str | None = None) -> dict[str, Any]:
    kind = TABLE.get(code, TABLE["internal"]).openai_type
    return {"error": {"message": message, "type": kind, "param": None, "code": openai_code}}


def _respond(
    request: Request,
    status: int,
    message: str,
    code: str | None = None,
    openai_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if request.url.path.startswith(OPENAI_PREFIX):
        body = openai_body(code or code_of_status(status), message, openai_code)
    else:
        body = {"detail": message}
    return JSONResponse(body, status_code=status, headers=headers)


def _described(errors: Any) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
        for e in errors
    )


def _allowed(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first
    route's, though GET and POST of one path are two routes here)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def invalid(
    where: tuple[str | int, ...], message: str, value: Any = None
) -> RequestValidationError:
    """A refusal no schema can state (a document related to itself), in the shape every other
    422 has: ``{"detail": [{"loc", "msg", "type"}]}``."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", *where), "msg": message, "input": value}]
    )


def install(app: FastAPI) -> None:
    """The exception handlers: every error leaves the gateway through here."""

    @app.exception_handler(OlympusError)
    async def domain(request: Request, exc: OlympusError) -> JSONResponse:
        return _respond(
            request, exc.status, exc.message, exc.code, exc.openai_code, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {"Allow": ", ".join(_allowed(request))}
        return _respond(request, exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith(OPENAI_PREFIX):
            return _respond(request, 400, _described(exc.errors()) or "invalid request")
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(ValidationError)
    async def invalid_message(request: Request, exc: ValidationError) -> JSONResponse:
        # A message the bus would refuse is the caller's mistake, never a 500.
        errors = exc.errors(include_url=False)
        if request.url.path.startswith(OPENAI_PREFIX):
            return _respond(request, 400, _described(errors) or "invalid request")
        return JSONResponse({"detail": errors}, status_code=422)
