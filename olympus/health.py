"""Asking workers whether they are up: one probe for the gateway, ``olympus status`` and
``olympus up``."""

from __future__ import annotations

import asyncio

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from schemas import subjects
from schemas.messages import HealthPing, HealthReply


async def probe(nc: nats.NATS, service: str, timeout_s: float = 1.0) -> bool:
    """Whether ``service`` answers its health subject, started and ready, within the timeout."""
    try:
        answer = await nc.request(
            subjects.health_subject(service),
            HealthPing().model_dump_json().encode(),
            timeout=timeout_s,
        )
        return HealthReply.model_validate_json(answer.data).ok
    except (TimeoutError, NatsTimeout, NoRespondersError, ValidationError):
        return False


async def replicas(nc: nats.NATS, service: str, listen_s: float = 1.0) -> list[HealthReply]:
    """The answer of every replica of ``service`` that answers within ``listen_s``: each one
    subscribes to its health subject outside any queue group, so all of them hear a ping."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    try:
        await nc.publish(
            subjects.health_subject(service), HealthPing().model_dump_json().encode(), inbox
        )
        answers: list[HealthReply] = []
        deadline = asyncio.get_running_loop().time() + listen_s
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                message = await subscription.next_msg(timeout=left)
            except (TimeoutError, NatsTimeout):
                break
            try:
                answers.append(HealthReply.model_validate_json(message.data))
            except ValidationError:
                continue
        return answers
    finally:
        await subscription.unsubscribe()


async def probe_all(nc: nats.NATS, timeout_s: float = 1.0) -> dict[str, bool]:
    """Every worker's answer, asked at once."""
    answers = await asyncio.gather(*(probe(nc, s, timeout_s) for s in subjects.WORKERS))
    return dict(zip(subjects.WORKERS, answers, strict=True))
