"""The only place the stores are opened: H.A.D.E.S. alone holds their credentials."""

from __future__ import annotations

from hades import DocumentGraph, VectorIndex
from olympus.settings import CommonSettings
from workers.indexer.settings import IndexerSettings


def open_stores(
    common: CommonSettings, settings: IndexerSettings
) -> tuple[VectorIndex, DocumentGraph]:
    """The vector index and the document graph the settings name (embedded files by default)."""
    from hades.milvus import MilvusVectorIndex

    graph: DocumentGraph
    if settings.graph_backend == "arango":
        from hades.arango import ArangoDocumentGraph

        if common.environment == "production" and not settings.arango_password:
            raise ValueError("OLYMPUS_INDEXER_ARANGO_PASSWORD must be set in production")
        graph = ArangoDocumentGraph(
            settings.arango_url,
            settings.arango_database,
            settings.arango_user,
            settings.arango_password.get_secret_value() if settings.arango_password else "",
        )
    else:
        from hades.sqlite import SqliteDocumentGraph

        graph = SqliteDocumentGraph(settings.sqlite_path or common.data_dir / "graph.sqlite3")
    vectors = MilvusVectorIndex(
        milvus_uri(common, settings),
        settings.dims,
        term_key=graph.secret("milvus-terms"),
        collection=settings.milvus_collection,
        token=settings.milvus_token.get_secret_value() if settings.milvus_token else None,
        hybrid_candidates=settings.hybrid_candidates,
    )
    return vectors, graph


def milvus_uri(common: CommonSettings, settings: IndexerSettings) -> str:
    """The Milvus server, or the Milvus Lite folder in the data folder."""
    return settings.milvus_uri or str(common.data_dir / "milvus.db")
