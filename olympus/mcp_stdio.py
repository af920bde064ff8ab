"""``olympus mcp``: Olympus's MCP server over stdio, for desktop clients that start a command.

It is a bridge, not a second server: every request read on stdin is sent to a gateway's
``/mcp`` (the URL and key the other commands use) and its answer written back, progress
notifications included. So the tools are the gateway's, wherever it runs, and the bus
credentials stay on the server; this process holds only an API key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from olympus.remote import EXIT_UNREACHABLE, add_connection_flags, connection

# The MCP SDK is imported when the command runs, not when the command line starts: loaded at
# start, it held every olympus command up, mcp or not (`olympus --help` took 0.9-1.1 s, and
# takes 0.37-0.40 s without it).
if TYPE_CHECKING:
    import mcp_types as types
    from mcp import Client
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel.server import Server

READ_TIMEOUT_S = 300.0  # an `ask` streams for as long as its answer takes


@asynccontextmanager
async def remote(url: str, key: str) -> AsyncIterator[Client]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=httpx2.Timeout(30.0, read=READ_TIMEOUT_S),
    )
    async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        yield client


def bridge(client: Client) -> Server[Any]:
    """A server whose every handler asks ``client`` (the gateway) the same thing."""
    from mcp.server.lowlevel.server import Server

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return await client.list_tools(cursor=params.cursor if params else None)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        async def relay(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        return await client.call_tool(params.name, params.arguments, progress_callback=relay)

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return await client.list_resources(cursor=params.cursor if params else None)

    async def list_resource_templates(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return await client.list_resource_templates(cursor=params.cursor if params else None)

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return await client.read_resource(str(params.uri))

    async def list_prompts(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return await client.list_prompts(cursor=params.cursor if params else None)

    async def get_prompt(
        ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        return await client.get_prompt(params.name, params.arguments)

    info = client.server_info
    return Server(
        "olympus",
        version=info.version if info else "",
        title=info.title if info else None,
        description=getattr(info, "description", None),
        instructions=client.instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


async def serve(url: str, key: str) -> None:
    from mcp.server.stdio import stdio_server

    async with remote(url, key) as client, stdio_server() as (read_stream, write_stream):
        server = bridge(client)
        await server.run(read_stream, write_stream, server.create_initialization_options())


def cmd_mcp(args: argparse.Namespace) -> int:
    import anyio

    url, key = connection(args)
    try:
        anyio.run(serve, url, key)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # the gateway down, the key refused: a sentence, no traceback
        print(f"olympus mcp: cannot use the gateway at {url}/mcp: {_reason(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


def add_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    server = sub.add_parser(
        "mcp", help="Olympus's MCP server over stdio (for desktop clients), bridged to a gateway"
    )
    add_connection_flags(server)
    server.set_defaults(func=cmd_mcp)
