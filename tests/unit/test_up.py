"""`olympus up`'s arguments: replicas of the model workers, and how they share the cores."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from olympus.cli import _replicas
from olympus.stack import Stack, StackConfig

pytestmark = pytest.mark.unit


def test_replicas_are_parsed_and_the_indexer_is_refused_with_the_reason():
    assert _replicas("embedder=2,generator=3") == {"embedder": 2, "generator": 3}
    assert _replicas("") == {}
    with pytest.raises(argparse.ArgumentTypeError, match="Milvus Lite and SQLite"):
        _replicas("indexer=2")
    for wrong in ("embedder", "embedder=0", "embedder=x", "gateway=2", "embedder=17"):
        with pytest.raises(argparse.ArgumentTypeError, match="WORKER=N"):
            _replicas(wrong)
    # The stack refuses it too, however it is configured (bench, tests, olympus up).
    with pytest.raises(ValueError, match="Milvus Lite and SQLite"):
        StackConfig(data_dir=Path("unused"), replicas={"indexer": 2})


def test_replicas_of_a_model_worker_split_the_cores_unless_told(tmp_path: Path):
    stack = Stack(StackConfig(data_dir=tmp_path, replicas={"embedder": 2}))
    cores = os.cpu_count() or 1
    assert stack._share_cores("embedder", {}) == {
        "OLYMPUS_EMBEDDER_THREADS": str(max(1, cores // 2))
    }
    assert stack._share_cores("embedder", {"OLYMPUS_EMBEDDER_THREADS": "4"}) == {}
    assert stack._share_cores("generator", {}) == {}  # one generator: all the cores
