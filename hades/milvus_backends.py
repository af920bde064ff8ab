"""The calls ``MilvusVectorIndex`` makes, two ways: to Milvus Lite's engine in this process (a
folder) or through pymilvus to a Milvus server (a URI).

Milvus Lite 3 is a Python engine. pymilvus reaches a folder by starting Lite's gRPC server in
the same process and talking to it: every write and search is then encoded to protobuf, sent
over a socket, decoded, served on another thread and back again. Called directly, the same
engine on the same folder of 1,000 SciFact documents cost half the CPU: 0.42 instead of 0.85
ms per chunk written, 3.5 instead of 7.7-9.7 ms per BM25 search. Through the whole stack a
BM25 query's indexer CPU went from 12.65 to 10.40 ms (``bench/retrieval.py``). It also opens
no socket at all.

Both backends answer in pymilvus' shapes: a hit is ``{"id", "distance", "entity"}``, BM25
distances negative, best first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class DenseIndex:
    """The dense field's index: its type (``FLAT``, ``HNSW``), metric and build parameters."""

    index_type: str
    metric: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Layout:
    """What a collection of chunks holds; both backends make the same one."""

    dims: int
    dense: DenseIndex
    text_max_bytes: int
    bm25: dict[str, float]

    # BM25 of the text in ``terms`` (Milvus' own function) lands in ``sparse``.
    bm25_from, bm25_into = "terms", "sparse"
    # Scalar fields every search or delete filters by.
    filtered = ("tenant", "doc_id")

    def fields(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Name, ``DataType`` member name and parameters of each field, the key first."""
        return [
            ("id", "VARCHAR", {"max_length": 64, "is_primary": True}),
            ("tenant", "VARCHAR", {"max_length": 64}),
            ("collection", "VARCHAR", {"max_length": 64}),
            ("doc_id", "VARCHAR", {"max_length": 128}),
            ("position", "INT64", {}),
            ("terms", "VARCHAR", {"max_length": self.text_max_bytes, "enable_analyzer": True}),
            ("sparse", "SPARSE_FLOAT_VECTOR", {}),
            ("dense", "FLOAT_VECTOR", {"dim": self.dims}),
        ]


class MilvusBackend(Protocol):
    """The Milvus calls of ``MilvusVectorIndex``, one collection name at a time."""

    def has(self, name: str) -> bool: ...
    def names(self) -> list[str]: ...
    def create(self, name: str, layout: Layout) -> None: ...
    def drop(self, name: str) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def load(self, name: str) -> None: ...
    def fields(self, name: str) -> dict[str, dict[str, Any]]:
        """Each field's parameters by name (``dim`` for a vector)."""
        ...

    def properties(self, name: str) -> dict[str, str]: ...
    def set_property(self, name: str, key: str, value: str) -> None: ...
    def dense_index(self, name: str) -> tuple[str, str]:
        """The dense field's index type and metric."""
        ...

    def replace_dense_index(self, name: str, dense: DenseIndex) -> None: ...
    def upsert(self, name: str, rows: list[dict[str, Any]]) -> None: ...
    def delete(self, name: str, expr: str) -> None: ...
    def query(self, name: str, expr: str, fields: list[str], limit: int) -> list[dict]: ...
    def count(self, name: str, expr: str) -> int: ...
    def flush(self, name: str) -> None: ...
    def search(
        self, name: str, data: list, field: str, limit: int, expr: str, params: dict
    ) -> list[list[dict]]:
        """The hits of each query in ``data`` (vectors, or text for BM25), in one call."""
        ...

    def hybrid(
        self,
        name: str,
        routes: Sequence[tuple[Any, str, dict]],
        candidates: int,
        limit: int,
        expr: str,
        rrf_k: int,
    ) -> list[dict]:
        """Each route (query, field, search parameters) searched for ``candidates`` hits,
        fused by reciprocal rank (``1 / (rrf_k + rank)``, rank from 1); distances are the
        fused scores."""
        ...

    def close(self) -> None: ...


_OUTPUT = ["doc_id", "collection", "position"]


class EmbeddedMilvus:
    """Milvus Lite's engine over ``folder``, in this process: no server, no socket."""

    def __init__(self, folder: Path) -> None:
        from milvus_lite import MilvusLite

        folder.parent.mkdir(parents=True, exist_ok=True)
        self.db = MilvusLite(str(folder))  # holds the folder's lock until closed
        os.chmod(folder, 0o700)

    def _col(self, name: str) -> Any:
        return self.db.get_collection(name)

    def has(self, name: str) -> bool:
        return bool(self.db.has_collection(name))

    def names(self) -> list[str]:
        return list(self.db.list_collections())

    def create(self, name: str, layout: Layout) -> None:
        from milvus_lite import CollectionSchema, DataType, FieldSchema, Function, FunctionType

        schema = CollectionSchema(
            fields=[
                FieldSchema(
                    name=field,
                    dtype=DataType[kind],
                    is_function_output=field == layout.bm25_into,
                    **params,
                )
                for field, kind, params in layout.fields()
            ],
            functions=[
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[layout.bm25_from],
                    output_field_names=[layout.bm25_into],
                )
            ],
        )
        col = self.db.create_collection(name, schema)
        col.create_index("dense", _engine_index(layout.dense))
        col.create_index(
            layout.bm25_into,
            {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25", "params": layout.bm25},
        )
        for field in layout.filtered:
            col.create_index(field, {"index_type": "INVERTED", "metric_type": "NONE"})

    def drop(self, name: str) -> None:
        self.db.drop_collection(name)

    def rename(self, old: str, new: str) -> None:
        self.db.rename_collection(old, new)

    def load(self, name: str) -> None:
        self._col(name).load()

    def fields(self, name: str) -> dict[str, dict[str, Any]]:
        return {f.name: {"dim": f.dim} for f in self._col(name).schema.fields}

    def properties(self, name: str) -> dict[str, str]:
        return dict(self._col(name).schema.properties)

    def set_property(self, name: str, key: str, value: str) -> None:
        self.db.alter_collection_properties(name, properties={key: value})

    def dense_index(self, name: str) -> tuple[str, str]:
        made = self._col(name).get_index_info("dense") or {}
        return made.get("index_type", ""), made.get("metric_type", "")

    def replace_dense_index(self, name: str, dense: DenseIndex) -> None:
        col = self._col(name)
        col.release()
        col.drop_index("dense")
        col.create_index("dense", _engine_index(dense))

    def upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        self._col(name).upsert(rows)

    def delete(self, name: str, expr: str) -> None:
        col = self._col(name)
        ids = [row["id"] for row in col.query(expr, output_fields=["id"])]
        col.delete(ids)

    def query(self, name: str, expr: str, fields: list[str], limit: int) -> list[dict]:
        return list(self._col(name).query(expr, output_fields=fields, limit=limit))

    def count(self, name: str, expr: str) -> int:
        return len(self._col(name).query(expr, output_fields=["id"]))

    def flush(self, name: str) -> None:
        self._col(name).flush()

    def search(
        self, name: str, data: list, field: str, limit: int, expr: str, params: dict
    ) -> list[list[dict]]:
        found = self._col(name).search(
            data,
            top_k=limit,
            expr=expr,
            output_fields=_OUTPUT,
            anns_field=field,
            search_params=params or None,
        )
        return [list(hits) for hits in found]

    def hybrid(
        self,
        name: str,
        routes: Sequence[tuple[Any, str, dict]],
        candidates: int,
        limit: int,
        expr: str,
        rrf_k: int,
    ) -> list[dict]:
        fused: dict[str, dict] = {}
        for data, field, params in routes:
            (hits,) = self.search(name, [data], field, candidates, expr, params)
            for rank, hit in enumerate(hits):
                best = fused.setdefault(hit["id"], {**hit, "distance": 0.0})
                best["distance"] += 1.0 / (rrf_k + rank + 1)
        # Equal scores in the order of their ids, as Milvus breaks ties.
        return sorted(fused.values(), key=lambda hit: (-hit["distance"], hit["id"]))[:limit]

    def close(self) -> None:
        self.db.close()


def _engine_index(dense: DenseIndex) -> dict[str, Any]:
    return {"index_type": dense.index_type, "metric_type": dense.metric, "params": dense.params}


class ServerMilvus:
    """A Milvus server through pymilvus.

    ``strong``: read-your-writes consistency and waiting for each index to be built, as a
    server needs. Milvus Lite's gRPC server (the tests' stand-in for a server) has neither.
    """

    def __init__(self, uri: str, token: str | None = None, *, strong: bool = True) -> None:
        from pymilvus import MilvusClient

        self.client = MilvusClient(uri=uri, token=token or "")
        self._consistency = {"consistency_level": "Strong"} if strong else {}
        self._index_wait = {} if strong else {"sync": False}

    def has(self, name: str) -> bool:
        return bool(self.client.has_collection(name))

    def names(self) -> list[str]:
        return list(self.client.list_collections())

    def create(self, name: str, layout: Layout) -> None:
        from pymilvus import DataType, Function, FunctionType

        schema = self.client.create_schema(auto_id=False)
        for field, kind, params in layout.fields():
            schema.add_field(field, DataType[kind], **params)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=[layout.bm25_from],
                output_field_names=[layout.bm25_into],
            )
        )
        index = self._dense_params(layout.dense)
        index.add_index(
            field_name=layout.bm25_into,
            index_type="SPARSE_INVERTED_INDEX",
            metric_type="BM25",
            params={"params": layout.bm25},
        )
        for field in layout.filtered:
            index.add_index(field_name=field, index_type="INVERTED")
        self.client.create_collection(name, schema=schema, **self._consistency)
        self.client.create_index(name, index, **self._index_wait)

    def _dense_params(self, dense: DenseIndex) -> Any:
        index = self.client.prepare_index_params()
        # Nested "params": pymilvus 3 flattens the outer dict and Lite reads only the inner one.
        index.add_index(
            field_name="dense",
            index_type=dense.index_type,
            metric_type=dense.metric,
            params={"params": dense.params},
        )
        return index

    def drop(self, name: str) -> None:
        self.client.drop_collection(name)

    def rename(self, old: str, new: str) -> None:
        self.client.rename_collection(old, new)

    def load(self, name: str) -> None:
        self.client.load_collection(name)

    def fields(self, name: str) -> dict[str, dict[str, Any]]:
        described = self.client.describe_collection(name)["fields"]
        return {f["name"]: dict(f.get("params") or {}) for f in described}

    def properties(self, name: str) -> dict[str, str]:
        return dict(self.client.describe_collection(name).get("properties") or {})

    def set_property(self, name: str, key: str, value: str) -> None:
        self.client.alter_collection_properties(name, properties={key: value})

    def dense_index(self, name: str) -> tuple[str, str]:
        made = self.client.describe_index(name, "dense") or {}
        return made.get("index_type", ""), made.get("metric_type", "")

    def replace_dense_index(self, name: str, dense: DenseIndex) -> None:
        self.client.release_collection(name)
        self.client.drop_index(name, "dense")
        self.client.create_index(name, self._dense_params(dense), **self._index_wait)

    def upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.client.upsert(name, rows)

    def delete(self, name: str, expr: str) -> None:
        self.client.delete(name, filter=expr)

    def query(self, name: str, expr: str, fields: list[str], limit: int) -> list[dict]:
        return list(
            self.client.query(
                name, filter=expr, output_fields=fields, limit=limit, **self._consistency
            )
        )

    def count(self, name: str, expr: str) -> int:
        rows = self.client.query(name, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def flush(self, name: str) -> None:
        self.client.flush(name)

    def search(
        self, name: str, data: list, field: str, limit: int, expr: str, params: dict
    ) -> list[list[dict]]:
        result = self.client.search(
            name,
            data=data,
            anns_field=field,
            limit=limit,
            filter=expr,
            output_fields=_OUTPUT,
            search_params={"params": params},
            **self._consistency,
        )
        return [list(hits) for hits in result]

    def hybrid(
        self,
        name: str,
        routes: Sequence[tuple[Any, str, dict]],
        candidates: int,
        limit: int,
        expr: str,
        rrf_k: int,
    ) -> list[dict]:
        from pymilvus import AnnSearchRequest, RRFRanker

        requests = [
            AnnSearchRequest(
                data=[data], anns_field=field, param={"params": params}, limit=candidates, expr=expr
            )
            for data, field, params in routes
        ]
        result = self.client.hybrid_search(
            name,
            requests,
            RRFRanker(rrf_k),
            limit=limit,
            output_fields=_OUTPUT,
            **self._consistency,
        )
        return list(result[0])

    def close(self) -> None:
        self.client.close()
