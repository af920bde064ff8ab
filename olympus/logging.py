"""structlog JSON logs on the ``olympus`` logger, one configuration for every process."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from olympus import telemetry


def configure(
    service: str, level: str = "INFO", fmt: str = "auto", access_log: bool = False
) -> None:
    """JSON lines by default; human-readable when ``fmt="console"`` (or auto on a terminal).
    uvicorn's access lines only with ``access_log`` (they carry every path and query string).

    Also starts tracing when a collector is configured: every process calls this first, before
    it builds what logs (a FastStream app, an MCP server, uvicorn's server).
    """
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())

    def add_service(
        _: object, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        # A processor, not a context variable: tasks started before this call (a server's
        # request handlers) would not see one.
        event.setdefault("service", service)
        return event

    shared: list[structlog.types.Processor] = [
        add_service,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        telemetry.log_fields,
        telemetry.redact_log,
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_not_a_stop)
    # Every other library's warnings and errors as the same JSON lines (at ``level`` when it
    # is higher), and nothing else of theirs: the MCP SDK would otherwise put a Rich handler
    # here at INFO (a line per session and boxed, multi-line tracebacks of the tools a client
    # misnamed).
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
    for name in ("olympus", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        # uvicorn writes access lines whenever its access logger has a handler, whatever its
        # access_log flag said: no handler is how they stay off.
        wanted = access_log or name != "uvicorn.access"
        logger.handlers[:] = [handler] if wanted else []
        logger.setLevel(level.upper())
        logger.propagate = False
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    telemetry.configure(service)


def _not_a_stop(record: logging.LogRecord) -> bool:
    """Drop FastStream's error line for a handler cancelled as its worker stops: the message
    was handed back (``olympus.delivery`` says so at info), nothing failed."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (isinstance(exc, asyncio.CancelledError) and record.name == "olympus.faststream")


def get_logger(name: str = "olympus") -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name if name.startswith("olympus") else f"olympus.{name}")
