"""Pure OpenAI chat.completion -> Anthropic message, and Anthropic events -> the final message.

A non-streaming upstream answer is fed to the same StreamTranslator as one chunk, so both paths
share every rule (stop reasons, usage, tool ids, thinking signatures).
"""

from __future__ import annotations

import orjson

from .stream import StreamTranslator, completion_as_chunk


def accumulate(events: list[tuple[str, dict]], cut: list[int] | None = None) -> dict:
    """The final Anthropic message that a list of stream events describes.  A tool call whose
    streamed arguments are not JSON (cut short by max_tokens) raises, or, given a `cut` list, is
    left out of the message (as a buffered answer leaves it out) and its index noted there."""
    message: dict = {}
    partial: dict[int, list[str]] = {}
    for name, data in events:
        if name == "message_start":
            message = dict(data["message"], content=[], usage=dict(data["message"]["usage"]))
        elif name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                partial.setdefault(data["index"], []).append(delta["partial_json"])
        elif name == "content_block_stop" and data["index"] in partial:
            raw = "".join(partial.pop(data["index"]))
            try:
                message["content"][data["index"]]["input"] = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                if cut is None:
                    raise
                cut.append(data["index"])
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    if cut:
        message["content"] = [block for i, block in enumerate(message["content"]) if i not in cut]
    return message


def from_completion(completion: dict, translator: StreamTranslator) -> dict:
    """A non-streaming chat.completion -> the Anthropic message (docs/PROTOCOL.md §5.3)."""
    chunk = completion_as_chunk(completion)
    return accumulate(translator.start() + translator.feed(chunk) + translator.finish(saw_done=True))
