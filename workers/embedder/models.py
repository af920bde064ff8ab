"""The model the embedder runs, and the one a live ``olympus reindex`` moves it to.

``olympus reindex --model PATH`` against a running stack writes a ``ModelMove`` under
``OLYMPUS_MODEL``/``embedder`` (KV). Every embedder reads it when it starts and every
``POLL_S`` after. One whose own model (``OLYMPUS_EMBEDDER_MODEL``) was moved away from loads the
new one; while the index's next collection is filled (``building``) it embeds every chunk and
question with both, and once the index has switched (``switched``) with the new one only. The
value outlives the embedders, so one started later with the old setting follows as well. A
cancelled reindex puts back the move before it, or deletes the value if there was none: the
embedder then runs its own model again.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from olympus.logging import get_logger
from schemas import subjects
from schemas.messages import ModelMove

if TYPE_CHECKING:  # torch is imported where a model is loaded, not where the app is built
    from workers.embedder.batching import EmbeddingBatcher
    from workers.embedder.chunking import Chunker
    from workers.embedder.encoder import Encoder

log = get_logger("olympus.embedder")
POLL_S = 2.0
"""How often an embedder reads the move (``olympus reindex`` then waits for every embedder's
health answer to list the new model)."""


class MoveReader:
    """Reads what ``olympus reindex`` asks of the embedders now (None: nothing, or a bus set up
    by an older Olympus, without the bucket until ``olympus streams`` runs again).

    The bucket is looked up once (a STREAM.INFO), unless one already open is given, and then
    only its key is read, so an embedder
    polling every ``POLL_S`` sends one request, not two. After a read that fails, the next
    looks the bucket up again."""

    def __init__(self, js: JetStreamContext, bucket: KeyValue | None = None) -> None:
        self._js = js
        self._bucket = bucket

    async def __call__(self) -> ModelMove | None:
        try:
            if self._bucket is None:
                self._bucket = await self._js.key_value(subjects.MODEL_BUCKET)
            entry = await self._bucket.get(subjects.MODEL_KEY)
        except (BucketNotFoundError, KeyNotFoundError, KeyDeletedError):
            return None  # never moved, or a reindex was cancelled
        except Exception:
            self._bucket = None
            raise
        return ModelMove.model_validate_json(entry.value) if entry.value else None


async def read_move(js: JetStreamContext) -> ModelMove | None:
    """The move now, read once (the CLI's commands)."""
    return await MoveReader(js)()


@dataclass(frozen=True)
class Model:
    """An encoder loaded and ready: its batcher, and the chunker cut to its tokens."""

    encoder: Encoder
    batcher: EmbeddingBatcher
    chunker: Chunker

    @property
    def identity(self) -> str:
        return self.encoder.identity


class Models:
    """Which model embeds (``current``) and which embeds beside it (``next``). A model is
    loaded when first needed: an embedder started after a switch loads only the new one."""

    def __init__(
        self, own: str, own_fingerprint: str, load: Callable[[str], Awaitable[Model]]
    ) -> None:
        self._own, self._own_fingerprint = own, own_fingerprint
        self._load = load
        self._current: Model | None = None
        self.next: Model | None = None
        # Kept once loaded: work in flight may still hold a model another move set aside.
        self._loaded: dict[str, Model] = {}
        self._failed: set[str] = set()

    @property
    def current(self) -> Model:
        assert self._current is not None, "follow() first"
        return self._current

    async def follow(self, move: ModelMove | None) -> bool:
        """Run what ``move`` asks of this embedder; whether that changed anything. The own
        model's failure to load raises; another's is logged, and the embedder goes on with
        what it has."""
        wanted: tuple[Model, Model | None]
        if move is None or self._own_fingerprint not in move.moved:
            wanted = (await self._own_model(), None)
        elif move.phase == "switched":
            wanted = (await self._model(move.to) or await self._own_model(), None)
        else:
            held = await self._model(move.current) if move.current else None
            now = held or await self._own_model()
            following = await self._model(move.to)
            wanted = (now, following if following is not now else None)
        if wanted == (self._current, self.next):
            return False
        self._current, self.next = wanted
        log.info(
            "embedding model changed",
            model=self.current.identity,
            next_model=self.next.identity if self.next else None,
        )
        return True

    async def _own_model(self) -> Model:
        own = _key(self._own)
        if own not in self._loaded:
            self._loaded[own] = await self._load(self._own)
        return self._loaded[own]

    async def _model(self, folder: str) -> Model | None:
        path = _key(folder)
        if path not in self._loaded and path not in self._failed:
            try:
                self._loaded[path] = await self._load(path)
            except Exception as exc:  # said once; the index refuses what this one sends
                self._failed.add(path)
                log.error("cannot load the model olympus reindex asks for", path=folder,
                          error=str(exc))  # fmt: skip
        return self._loaded.get(path)


def _key(folder: str) -> str:
    """One model folder however it is written (a hub id as it is)."""
    return os.path.realpath(folder) if os.path.isdir(folder) else folder
