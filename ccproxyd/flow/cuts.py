"""A call cut before its usage came is billed all the same.

A call that reached its provider and ended without its usage (it broke mid-stream, or was
cancelled because every client left) is still billed by the provider, for the input and for the
output produced before the cut: `charge_cut` counts both (in a thread) and marks them estimated;
`charge_cut_later` does it in a task of its own, for a handler its client may have left, and
`CUTS` holds those tasks until they end, so that a stopping daemon waits for their lines.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Callable

import orjson

from ..translate import tokens
from ..translate.stream import map_usage

if TYPE_CHECKING:
    from .proxy import Answer

log = logging.getLogger("ccproxyd.proxy")          # the relay's lines: the same logger


async def charge_cut(answer: Answer) -> None:
    """A call that reached its provider and ended without its usage (it broke mid-stream, or was
    cancelled because every client left) is still billed by the provider: the input (the
    upstream's own count if it sent one, else counted here) and the output produced before the
    cut, marked estimated (translator.cut).  Counted in a thread."""
    translator = answer.translator
    if translator.final_usage is not None:
        return
    raw, produced, reported = answer.raw, translator.output_text(), translator.usage

    def count() -> dict:
        if reported:
            return dict(map_usage(reported), output_tokens=max(map_usage(reported)["output_tokens"],
                                                                tokens.count_text(produced)))
        return {"input_tokens": tokens.count_request(orjson.loads(raw)), "output_tokens": tokens.count_text(produced),
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    usage = await asyncio.to_thread(count)
    if translator.web_searches or translator.web_fetches:     # the searches it ran before the cut
        usage["server_tool_use"] = {"web_search_requests": translator.web_searches,
                                    "web_fetch_requests": translator.web_fetches}
    translator.final_usage, translator.usage_estimated, translator.cut = usage, True, True


CUTS: set[asyncio.Task] = set()            # charge_cut_later's tasks: held until they end, waited for at stop


def charge_cut_later(answer: Answer, then: Callable[[], None]) -> None:
    """charge_cut in a task of its own, then `then()`: for a handler whose client may have gone,
    which cancels the handler at its next await."""
    async def run() -> None:
        try:
            await charge_cut(answer)
        except Exception:                       # a bug here must not lose the log line
            log.exception("%s: cannot count the usage of a cut call", answer.request_id)
        finally:
            then()
    task = asyncio.create_task(run())
    CUTS.add(task)
    task.add_done_callback(CUTS.discard)
