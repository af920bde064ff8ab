"""What a stopped stack's stores hold, document by document: the graph's record and chunks
beside Milvus' vectors. The chaos tests and ``bench/chaos.py`` read a stack back with it to
count what was lost, doubled or left half-done.

    python -m hades.audit DATA_DIR [TENANT]    # JSON on stdout

Run in a process of its own (``audit_stopped``): Milvus Lite keeps its folder locked until the
process that opened it exits, and the stack must be able to open it again afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hades.milvus import MilvusVectorIndex
from hades.sqlite import SqliteDocumentGraph


def audit(data_dir: Path, tenant: str, dims: int = 384) -> dict[str, object]:
    """Each document's status, chunk count (its record's, the graph's) and vectors; and every
    vector of the tenant, orphans included. ``dims``: the indexer's (OLYMPUS_INDEXER_DIMS)."""
    graph = SqliteDocumentGraph(data_dir / "graph.sqlite3")
    vectors = MilvusVectorIndex(
        str(data_dir / "milvus.db"), dims, term_key=graph.secret("milvus-terms")
    )
    docs, _ = graph.list_documents(tenant, limit=10_000)
    report = {
        "documents": {
            d.doc_id: {
                "filename": d.filename,
                "status": d.status,
                "chunk_count": d.chunk_count,
                "graph_chunks": len(graph.chunk_ids(tenant, d.doc_id)),
                "vectors": vectors.count(tenant, d.doc_id),
            }
            for d in docs
        },
        "vectors_total": vectors.count(tenant),
        "model": vectors.model,
    }
    vectors.close()
    graph.close()
    return report


def audit_stopped(data_dir: Path, tenant: str = "default") -> dict[str, Any]:
    """``audit`` in a process of its own (the test's own process keeps no lock)."""
    out = subprocess.run(
        [sys.executable, "-m", "hades.audit", str(data_dir), tenant],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return dict(json.loads(out))


if __name__ == "__main__":
    print(json.dumps(audit(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "default")))
