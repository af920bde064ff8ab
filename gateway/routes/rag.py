"""Documents: add, upload, list, inspect, delete, follow progress."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Sequence
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.deps import ApiKeyDep, NatsDep, SettingsDep, WriteKeyDep
from gateway.errors import RateLimited, invalid
from gateway.models import (
    AUTHENTICATED,
    AcceptedDocument,
    AddDocumentRequest,
    DeleteResponse,
    DocId,
    DocumentListResponse,
    Formats,
    Relations,
    UploadResponse,
    problems,
)
from olympus import telemetry
from schemas import subjects
from schemas.formats import BINARY_MEDIA_TYPES, MEDIA_TYPES, content_problem, media_type_of
from schemas.ids import content_hash, document_id, ingest_msg_id, status_msg_id
from schemas.messages import (
    MAX_OFFSET,
    DeadLetter,
    DeclaredRelation,
    DocumentChunks,
    DocumentChunksGet,
    DocumentEvent,
    DocumentGet,
    DocumentInfo,
    DocumentList,
    DocumentPage,
    DocumentReply,
    DocumentStatus,
    IndexStatus,
    IngestDocument,
    Metadata,
    Name,
    StatusChange,
)

router = APIRouter(prefix="/rag", tags=["documents"], responses=problems(*AUTHENTICATED))
TERMINAL = {"indexed", "failed", "deleted"}
JUST_ACCEPTED_S = 3.0  # how long a document the gateway just accepted may take to be recorded
MAX_FILENAME = 255
_ERRORS = problems(404, 415)
_NOT_FOUND = problems(404)
_SUPPORTED = ", ".join(sorted(MEDIA_TYPES))
_QUEUE_RETRY_S = 5  # what a tenant over its share of the ingest queue is told to wait


def _unsupported(filename: str) -> HTTPException:
    return HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        f"{filename!r}: unsupported file type; supported: {_SUPPORTED}",
    )


async def _current(nats_client: NatsDep, tenant: str, doc_id: str) -> DocumentInfo | None:
    reply = await nats_client.request(
        subjects.RPC_DOCUMENT_GET, DocumentGet(tenant=tenant, doc_id=doc_id), DocumentReply
    )
    return reply.document


async def _admit(nats_client: NatsDep, settings: SettingsDep, tenant: str, files: int) -> None:
    """Refuse a tenant's upload while it has its share of the ingest queue waiting."""
    waiting = await nats_client.queued(tenant)
    if waiting + files > settings.max_queued_per_tenant:
        raise RateLimited(
            f"{waiting} of this tenant's documents are waiting to be indexed; at most "
            f"{settings.max_queued_per_tenant} may wait at once: send these when fewer wait",
            retry_after_s=_QUEUE_RETRY_S,
        )


async def _ingest(
    nats_client: NatsDep,
    tenant: str,
    collection: str,
    filename: str,
    data: bytes,
    metadata: Metadata | None,
    relations: Sequence[DeclaredRelation] = (),
) -> tuple[AcceptedDocument, StatusChange | None]:
    """Publish one document; what it is now, and its "queued" change unless it was a repeat."""
    media_type = media_type_of(filename)
    text = None if media_type in BINARY_MEDIA_TYPES else _utf8(data)
    digest = content_hash(data)
    doc = IngestDocument(
        tenant=tenant,
        collection=collection,
        doc_id=document_id(tenant, collection, filename),
        filename=filename,
        # Binary formats, and text that is not UTF-8, travel as base64: the bytes arrive intact.
        content=text if text is not None else base64.b64encode(data).decode(),
        encoding="utf-8" if text is not None else "base64",
        media_type=media_type,
        metadata=metadata or {},
        relations=list(relations),
    )
    with telemetry.span(
        "olympus.ingest",
        "CHAIN",
        **{
            "input.value": filename,
            "olympus.doc_id": doc.doc_id,
            "olympus.collection": collection,
            "olympus.bytes": len(data),
        },
    ):
        return await _publish(nats_client, doc, digest, tenant, collection, filename)


async def _publish(
    nats_client: NatsDep,
    doc: IngestDocument,
    digest: str,
    tenant: str,
    collection: str,
    filename: str,
) -> tuple[AcceptedDocument, StatusChange | None]:
    # The same content with other relations is news too: the dedupe id covers both.
    sent = (
        digest
        if not doc.relations
        else content_hash(digest + "".join(r.model_dump_json() for r in doc.relations))
    )
    ack = await nats_client.publish_ingest(doc, ingest_msg_id(doc.doc_id, "upsert", sent))
    accepted = AcceptedDocument(
        doc_id=doc.doc_id, filename=filename, collection=collection, status="queued"
    )
    if ack.duplicate:
        # Same content inside the dedupe window: nothing new happens; say where it stands.
        current = await _current(nats_client, tenant, doc.doc_id)
        if current is None or current.status != "failed":
            status = current.status if current else "queued"
            version = current.version if current else None
            return accepted.model_copy(update={"status": status, "version": version}), None
        # Unless it failed: sending it again is asking to try again (once per failure).
        again = ingest_msg_id(doc.doc_id, f"upsert-after-{current.version}", sent)
        ack = await nats_client.publish_ingest(doc, again)
        if ack.duplicate:
            return accepted.model_copy(update={"status": "queued"}), None
    accepted = accepted.model_copy(update={"version": ack.seq})
    queued = StatusChange(
        collection=collection,
        doc_id=doc.doc_id,
        filename=filename,
        version=ack.seq,
        status="queued",
        content_hash=digest,
    )
    return accepted, queued


async def _record_queued(
    nats_client: NatsDep, tenant: str, changes: list[StatusChange | None]
) -> None:
    """Tell H.A.D.E.S. that these documents wait, in one message for the whole upload."""
    queued = [c for c in changes if c is not None]
    if not queued:
        return
    await nats_client.publish_index(
        subjects.INDEX_STATUS,
        IndexStatus(tenant=tenant, changes=queued),
        msg_id=status_msg_id([(c.doc_id, c.status, c.version) for c in queued]),
    )


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _check(filename: str, data: bytes, limit: int) -> None:
    if len(filename) > MAX_FILENAME:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"filename is longer than {MAX_FILENAME} characters",
        )
    media_type = media_type_of(filename)
    if media_type is None:
        raise _unsupported(filename)
    if len(data) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{filename!r} is larger than the limit of {limit} bytes",
        )
    if not data.strip():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{filename!r} is empty")
    problem = content_problem(media_type, data)
    if problem is not None:  # the name says one thing, the bytes another
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"{filename!r}: {problem}")


def plain_filename(raw: str) -> str:
    """The name a document is kept under: its last path part, without control characters
    or surrounding space (``../../etc/passwd.txt`` -> ``passwd.txt``)."""
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if name in ("", ".", ".."):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{raw!r} is not a usable filename")
    return name


_DECLARED = TypeAdapter(Relations)


def _parse_relations(raw: str | None) -> list[DeclaredRelation]:
    if not raw:
        return []
    try:
        return _DECLARED.validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {**error, "loc": ("body", "relations", *error["loc"])}
                for error in exc.errors(include_url=False, include_context=False)
            ]
        ) from None


async def _check_relations(
    nats_client: NatsDep, tenant: str, doc_ids: list[str], relations: Sequence[DeclaredRelation]
) -> None:
    """Every target exists (404, as another tenant's document would not) and none is the
    document itself (422)."""
    for i, relation in enumerate(relations):
        if relation.target in doc_ids:
            raise invalid(
                ("relations", i, "target"),
                "a document cannot be related to itself",
                relation.target,
            )
    for target in dict.fromkeys(r.target for r in relations):
        await _require(nats_client, tenant, target)


@router.post(
    "/add_document",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedDocument,
    responses=_ERRORS,
)
async def add_document(
    body: AddDocumentRequest, key: WriteKeyDep, nats_client: NatsDep, settings: SettingsDep
) -> AcceptedDocument:
    """Queue one document given as JSON. Same filename in the same collection replaces it."""
    if body.encoding == "base64":
        try:
            data = base64.b64decode(body.content, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, "content is not valid base64"
            ) from None
    else:
        data = body.content.encode()
    filename = plain_filename(body.filename)
    _check(filename, data, settings.max_upload_bytes)
    await _check_relations(
        nats_client,
        key.tenant,
        [document_id(key.tenant, body.collection, filename)],
        body.relations,
    )
    await _admit(nats_client, settings, key.tenant, 1)
    accepted, queued = await _ingest(
        nats_client, key.tenant, body.collection, filename, data, body.metadata, body.relations
    )
    await _record_queued(nats_client, key.tenant, [queued])
    return accepted


@router.post(
    "/documents",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadResponse,
    responses=_ERRORS,
)
async def upload_documents(
    files: Annotated[list[UploadFile], File(description="one or more files")],
    key: WriteKeyDep,
    nats_client: NatsDep,
    settings: SettingsDep,
    collection: Annotated[Name, Query()] = "default",
    relations: Annotated[
        str | None,
        Form(
            description='JSON: relations every file declares, e.g. [{"kind": "cites", '
            '"target": "<doc_id>"}] (each target must exist)',
            max_length=64 * 1024,
        ),
    ] = None,
) -> UploadResponse:
    """Queue uploaded files. Nothing is queued unless every file is acceptable."""
    declared = _parse_relations(relations)
    if len(files) > settings.max_files_per_request:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(files)} files in one request, more than the limit of "
            f"{settings.max_files_per_request}",
        )
    loaded: list[tuple[str, bytes]] = []
    for upload in files:
        if not upload.filename:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "every file needs a filename")
        filename = plain_filename(upload.filename)
        if media_type_of(filename) is None:
            raise _unsupported(filename)
        data = await upload.read(settings.max_upload_bytes + 1)
        _check(filename, data, settings.max_upload_bytes)
        loaded.append((filename, data))
    await _check_relations(
        nats_client,
        key.tenant,
        [document_id(key.tenant, collection, filename) for filename, _ in loaded],
        declared,
    )
    await _admit(nats_client, settings, key.tenant, len(loaded))
    published = [
        await _ingest(nats_client, key.tenant, collection, filename, data, None, declared)
        for filename, data in loaded
    ]
    await _record_queued(nats_client, key.tenant, [queued for _, queued in published])
    return UploadResponse(documents=[accepted for accepted, _ in published])


@router.get("/formats", response_model=Formats)
async def formats(_: ApiKeyDep, settings: SettingsDep) -> Formats:
    """The file types uploads accept and the size limits, for clients that check first."""
    return Formats(
        media_types=MEDIA_TYPES,
        max_upload_bytes=settings.max_upload_bytes,
        max_files_per_request=settings.max_files_per_request,
    )


@router.get("/documents", response_model=DocumentListResponse)
async def list_documents(
    key: ApiKeyDep,
    nats_client: NatsDep,
    collection: Name | None = None,
    status_: Annotated[DocumentStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DocumentListResponse:
    """The tenant's documents, newest first, filtered by collection and status."""
    page = await nats_client.request(
        subjects.RPC_DOCUMENT_LIST,
        DocumentList(
            tenant=key.tenant, collection=collection, status=status_, limit=limit, offset=offset
        ),
        DocumentPage,
    )
    return DocumentListResponse(items=page.items, total=page.total, limit=limit, offset=offset)


async def _require(nats_client: NatsDep, tenant: str, doc_id: str) -> DocumentInfo:
    current = await _current(nats_client, tenant, doc_id)
    if current is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {doc_id!r}")
    return current


@router.get("/documents/{doc_id}", response_model=DocumentInfo, responses=_NOT_FOUND)
async def get_document(doc_id: DocId, key: ApiKeyDep, nats_client: NatsDep) -> DocumentInfo:
    """Status (queued, processing, indexed, failed), chunk count and error of one document."""
    return await _require(nats_client, key.tenant, doc_id)


@router.delete(
    "/documents/{doc_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeleteResponse,
    responses=_NOT_FOUND,
)
async def delete_document(doc_id: DocId, key: WriteKeyDep, nats_client: NatsDep) -> DeleteResponse:
    """Remove the document with its chunks and vectors (in order with its ingests)."""
    current = await _require(nats_client, key.tenant, doc_id)
    doc = IngestDocument(
        tenant=key.tenant,
        collection=current.collection,
        doc_id=doc_id,
        op="delete",
        filename=current.filename,
    )
    await nats_client.publish_ingest(doc, ingest_msg_id(doc_id, "delete", str(time.time_ns())))
    return DeleteResponse(doc_id=doc_id)


@router.post(
    "/documents/{doc_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedDocument,
    responses=problems(404, 409),
)
async def retry_document(
    doc_id: DocId, key: WriteKeyDep, nats_client: NatsDep, settings: SettingsDep
) -> AcceptedDocument:
    """Process a failed document again, from the original its dead letter holds: no new upload.

    Only an embedding that failed for good keeps its original (the ingest stage's dead letter,
    30 days). 409 when the document has not failed, or when nothing is held to retry it from:
    it failed on its content (a corrupt or unsupported file: upload a corrected one), while
    being written to the stores (its dead letter holds chunks, not the file), or longer ago.
    """
    current = await _require(nats_client, key.tenant, doc_id)
    if current.status != "failed":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"only a failed document can be retried; {doc_id!r} is {current.status}",
        )
    found = await nats_client.ingest_letter(key.tenant, doc_id)
    original = _retryable(found[1], key.tenant, current) if found else None
    if found is None or original is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"nothing is held to retry {doc_id!r} from: it failed on its content, while being "
            f"written, or over 30 days ago ({current.error}); upload the file again",
        )
    await _admit(nats_client, settings, key.tenant, 1)
    seq, _ = found
    # Its own message id: the upload's would be dropped as a repeat inside the dedupe window.
    ack = await nats_client.publish_ingest(original, ingest_msg_id(doc_id, "retry", str(seq)))
    if not ack.duplicate:  # a second retry of the same letter, at once, queues nothing more
        queued = StatusChange(
            collection=original.collection,
            doc_id=doc_id,
            filename=original.filename,
            version=ack.seq,
            status="queued",
        )
        await _record_queued(nats_client, key.tenant, [queued])
    await nats_client.forget_letter(seq)
    return AcceptedDocument(
        doc_id=doc_id,
        filename=original.filename,
        collection=original.collection,
        status="queued",
        version=ack.seq,
    )


def _retryable(letter: DeadLetter, tenant: str, failed: DocumentInfo) -> IngestDocument | None:
    """The document a dead letter holds, if it is the tenant's version that failed."""
    if letter.original_encoding != "utf-8" or letter.sequence != failed.version:
        return None
    try:
        doc = IngestDocument.model_validate_json(letter.original)
    except ValueError:
        return None
    if (doc.tenant, doc.doc_id, doc.op) != (tenant, failed.doc_id, "upsert"):
        return None
    return doc


@router.get("/documents/{doc_id}/chunks", response_model=DocumentChunks, responses=_NOT_FOUND)
async def document_chunks(doc_id: DocId, key: ApiKeyDep, nats_client: NatsDep) -> DocumentChunks:
    """The document's chunks as indexed, in order, with their text."""
    await _require(nats_client, key.tenant, doc_id)
    return await nats_client.request(
        subjects.RPC_DOCUMENT_CHUNKS,
        DocumentChunksGet(tenant=key.tenant, doc_id=doc_id),
        DocumentChunks,
    )


@router.get("/documents/{doc_id}/events", responses=_NOT_FOUND)
async def document_events(
    doc_id: DocId, key: ApiKeyDep, nats_client: NatsDep, settings: SettingsDep
) -> EventSourceResponse:
    """Server-sent ``status`` events until the document is indexed, failed or deleted."""
    queue = nats_client.listen(
        key.tenant, doc_id
    )  # listen before reading the state: nothing slips by
    try:
        stored = await _current(nats_client, key.tenant, doc_id)
        if stored is not None:
            current = DocumentEvent.of(key.tenant, stored)
        else:
            # Just uploaded: H.A.D.E.S. may not have recorded it yet. Its first event says so.
            current = await _first_event(queue, doc_id, JUST_ACCEPTED_S)
    except BaseException:
        nats_client.unlisten(key.tenant, doc_id, queue)
        raise

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            yield _sse(current)
            if current.status in TERMINAL:
                return
            deadline = time.monotonic() + settings.sse_max_s
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return
                if event.version < current.version:
                    continue
                yield _sse(event)
                if event.status in TERMINAL:
                    return
        finally:
            nats_client.unlisten(key.tenant, doc_id, queue)

    return EventSourceResponse(stream(), ping=settings.sse_ping_s)


async def _first_event(
    queue: asyncio.Queue[DocumentEvent], doc_id: str, wait_s: float
) -> DocumentEvent:
    try:
        return await asyncio.wait_for(queue.get(), wait_s)
    except TimeoutError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {doc_id!r}") from None


def _sse(event: DocumentEvent) -> ServerSentEvent:
    return ServerSentEvent(
        data=event.model_dump_json(), event="status", id=f"{event.version}-{event.status}"
    )
