import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings

if __name__ == "__main__":
    settings = GatewaySettings()
    uvicorn.run(
        create_app(settings=settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=settings.access_log,
        loop="uvloop",
        http="httptools",
    )
