"""A local Arize Phoenix for ``olympus up --phoenix`` (the ``phoenix`` extra).

Phoenix binds its HTTP server to ``PHOENIX_HOST``, but its OTLP gRPC receiver to every
interface, with no setting to change that. Olympus sends OTLP over HTTP, so this launcher turns
the gRPC receiver off (the switch Phoenix itself uses in read-only mode) and runs
``phoenix serve``: nothing listens beyond loopback.
"""

from __future__ import annotations

import sys
from pathlib import Path


def environment(data_dir: Path, host: str, port: int) -> dict[str, str]:
    """Phoenix's settings: its database under the data folder, HTTP on loopback, no telemetry."""
    return {
        "PHOENIX_WORKING_DIR": str(data_dir / "phoenix"),
        "PHOENIX_HOST": host,
        "PHOENIX_PORT": str(port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }


def main() -> None:
    from phoenix.server import grpc_server
    from phoenix.server.main import main as phoenix_main

    original = grpc_server.GrpcServer.__init__

    def without_grpc(self: object, *args: object, **kwargs: object) -> None:
        kwargs["disabled"] = True
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    grpc_server.GrpcServer.__init__ = without_grpc  # type: ignore[method-assign]
    sys.argv = ["phoenix", "serve"]
    phoenix_main()


if __name__ == "__main__":
    main()
