"""Calls to the model runners (the CLIP and VQA BentoML services, reached over their sockets): what a
failure means to the caller, readiness and info. Runners are passed in, so fakes test this."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp
from bentoml.exceptions import BentoMLException

from api.errors import ApiError, unavailable

log = logging.getLogger("service")

RUNNER_UNAVAILABLE = "a model runner is restarting or unavailable: retry shortly"


async def from_runner(call: Awaitable[Any], retry_after_s: int) -> Any:
    """Await a runner call: a 4xx the runner raised passes through (400 invalid_argument and so on);
    a runner that died or restarts mid-request becomes a 503 to retry."""
    try:
        return await call
    except BentoMLException as exc:
        status = int(exc.error_code)
        if 400 <= status < 500:
            raise ApiError(status, "invalid_argument", str(exc)) from exc
        raise runner_unavailable(exc, retry_after_s) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise runner_unavailable(exc, retry_after_s) from exc


def runner_unavailable(exc: BaseException, retry_after_s: int) -> ApiError:
    log.warning("runner call failed: %r", exc)
    return unavailable("runner_unavailable", RUNNER_UNAVAILABLE, retry_after_s)


async def runner_ready(runner: Any) -> bool:
    try:
        return bool(await runner.to_async.is_ready(2))
    except Exception:  # noqa: BLE001 - not up yet
        return False


async def runner_info(runner: Any) -> dict[str, Any]:
    """A runner's info(), or {} while it is loading or gone."""
    try:
        return dict(await asyncio.wait_for(runner.to_async.info(), timeout=5))
    except Exception as exc:  # noqa: BLE001 - any failure means "not loaded"
        log.debug("runner not answering: %s", exc)
        return {}
