"""HTTP request and response shapes (the OpenAPI at /docs is generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import (
    MAX_NEW_TOKENS,
    MAX_TOP_K,
    Citation,
    DocumentInfo,
    Filename,
    Identifier,
    Metadata,
    Name,
    SearchMode,
    SessionTurn,
    Usage,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddDocumentRequest(Strict):
    filename: Filename = Field(examples=["handbook.md"])
    content: str = Field(description="the document: text, or base64 when encoding is base64")
    metadata: Metadata | None = None
    collection: Name = "default"
    encoding: Literal["utf-8", "base64"] = "utf-8"


class AcceptedDocument(BaseModel):
    doc_id: str
    filename: str
    collection: str
    status: str = Field(
        description="queued; or, when the same content was already sent, its current status"
    )


class UploadResponse(BaseModel):
    documents: list[AcceptedDocument]


class DeleteResponse(BaseModel):
    doc_id: str
    status: Literal["deleting"] = "deleting"


class DocumentListResponse(BaseModel):
    items: list[DocumentInfo]
    total: int
    limit: int
    offset: int


class ContextRequest(Strict):
    content: str = Field(min_length=1, max_length=32_768)


class ContextResponse(BaseModel):
    session_id: str
    context: list[str]


class QueryRequest(Strict):
    input: str = Field(min_length=1, description="the question or search text")
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)
    mode: SearchMode = "hybrid"
    collection: Name | None = None
    doc_ids: list[Identifier] | None = Field(
        default=None, max_length=100, description="search only these documents"
    )
    unique_documents: bool = Field(default=False, description="at most one passage per document")


class RetrievedDocument(BaseModel):
    doc_id: str
    filename: str
    chunk_id: str
    text: str
    score: float
    collection: str
    position: int


class QueryResponse(BaseModel):
    session_context: list[str]
    retrieved_documents: list[RetrievedDocument]


class Problem(BaseModel):
    detail: str


class ChatRequest(Strict):
    input: str = Field(min_length=1, description="the question")
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K, description="passages to retrieve")
    mode: SearchMode = "hybrid"
    collection: Name | None = None
    doc_ids: list[Identifier] | None = Field(default=None, max_length=100)
    stream: bool = Field(default=True, description="false: the whole answer as one JSON")
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


class ChatAnswer(BaseModel):
    request_id: str
    answer: str
    sources: list[Citation] = Field(description="the passages the prompt held, numbered")
    cited: list[int] = Field(description="the numbers the answer cites")
    dropped_passages: int = Field(description="retrieved passages that did not fit the prompt")
    finish_reason: str | None
    usage: Usage | None
    timings: dict[str, float]


class HistoryResponse(BaseModel):
    session_id: str
    turns: list[SessionTurn]
