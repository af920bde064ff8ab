from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from olympus.settings import refuse_to_start_on_bad_settings


def server_options(settings: GatewaySettings) -> dict[str, Any]:
    """How uvicorn serves the gateway. X-Forwarded-* are believed only from the configured
    proxies: otherwise any client could name itself a new address on every request and never
    reach the failed-login throttle (uvicorn alone believes anything from 127.0.0.1)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": settings.access_log,
        "loop": "uvloop",
        "http": "httptools",
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": settings.trusted_proxies or None,
        # uvicorn's 5 s is the Retry-After of a full ingest queue: a client waiting exactly that
        # long sent its next upload on the connection as it closed (httpx.ReadError).
        "timeout_keep_alive": settings.keep_alive_s,
    }


if __name__ == "__main__":
    with refuse_to_start_on_bad_settings("the gateway"):
        settings = GatewaySettings()
        app = create_app(settings=settings)
    uvicorn.run(app, **server_options(settings))
