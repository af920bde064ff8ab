"""The bus contract as an AsyncAPI 3 document, generated from the worker apps' routers.

The gateway serves the file this writes (``gateway/asyncapi.json``) and imports no worker
module, so it loads no model library; a test regenerates the document and checks the committed
file still matches. After changing a subscriber or a message: ``python -m olympus.asyncapi``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).resolve().parent.parent / "gateway" / "asyncapi.json"


def document() -> dict[str, Any]:
    """Built from the apps' brokers without connecting to anything."""
    from faststream.specification import AsyncAPI

    from olympus.settings import CommonSettings
    from workers.embedder.app import create_app as embedder
    from workers.generator.app import create_app as generator
    from workers.indexer.app import create_app as indexer

    common = CommonSettings(nats_url="nats://127.0.0.1:4222")
    brokers = [make(common).broker for make in (embedder, indexer, generator)]
    spec = AsyncAPI(
        *(b for b in brokers if b is not None),
        title="Olympus bus",
        version="1",
        description="Publish IngestDocument to olympus.ingest.<tenant>.<collection> to add "
        "documents, with a producer credential of that tenant (`olympus producers create`).",
    )
    return dict(spec.to_specification().to_jsonable())


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def main() -> int:
    DOCUMENT.write_text(render(document()))
    print(f"wrote {DOCUMENT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
