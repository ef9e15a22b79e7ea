"""Pure: an OpenRouter Chat Completions answer in which its web search (or fetch) ran, as Anthropic
sends a searched answer.

OpenRouter runs `openrouter:web_search` / `openrouter:web_fetch` inside the request and reports
only what the answer cites: `url_citation` annotations on the message (`delta.annotations` in a
stream, often in the last chunks) and, where it counts them, `usage.server_tool_use`.  The
searches themselves (their queries, how many) are not reported.  So the answer's text is held
until the stream ends (thinking still streams live), then goes out as Anthropic's: one
`server_tool_use` (input: the query the request asked for, see server_tools.query_of) and its
`web_search_tool_result` with one result per distinct cited URL, then the text with its cited spans
carrying citations, then any tool calls.  A fetch-only request gets one `web_fetch` call and
result per cited URL instead.
"""

from __future__ import annotations

from . import citations
from .server_tools import SEARCH_KEY
from .stream import StreamTranslator


class CitingTranslator(StreamTranslator):
    """StreamTranslator for a Chat Completions answer with OpenRouter's search tools on."""

    def __init__(self, requested_model: str, **kwargs) -> None:
        super().__init__(requested_model, **kwargs)
        self.query = self.tool_names.get(SEARCH_KEY)
        self.held_text: list[str] = []
        self.cited: list[dict] = []
        self.reported: dict = {}              # usage.server_tool_use, when OpenRouter counts

    @property
    def live_tools(self) -> bool:             # tool calls follow the held text: emitted whole at the end
        return False

    @live_tools.setter
    def live_tools(self, value: bool) -> None:
        pass

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                for part in (choice.get("delta"), choice.get("message")):
                    if isinstance(part, dict):
                        self._annotations(part.get("annotations"))
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("server_tool_use"), dict):
            self.reported = usage["server_tool_use"]
        return super().feed(chunk)

    def _annotations(self, annotations) -> None:
        for annotation in annotations if isinstance(annotations, list) else ():
            cited = citations.normalize(annotation)
            if cited is not None and cited not in self.cited:
                self.cited.append(cited)

    def _text(self, out: list, text: str) -> None:
        self.held_text.append(text)

    def _count(self, key: str, found: int) -> int:
        reported = self.reported.get(key)
        return reported if isinstance(reported, int) and reported >= 0 else found

    def finish(self, saw_done: bool) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        if saw_done or self.finish_reason is not None:     # else the base raises: nothing to add
            self._close(out)
            text = "".join(self.held_text)
            if self.query is not None:
                self.web_searches = self._count("web_search_requests", 1 if self.cited else 0)
                if self.web_searches or self.cited:
                    found = citations.results([], self.cited)
                    out += citations.search_events(self.next_index, citations.tool_id(), self.query, found)
                    self.next_index += 2
                cited = self.cited
            else:
                urls = list(dict.fromkeys(c["url"] for c in self.cited))
                for url in urls:
                    source = next(c for c in self.cited if c["url"] == url)
                    out += citations.fetch_events(self.next_index, citations.tool_id(), source)
                    self.next_index += 2
                self.web_fetches = self._count("web_fetch_requests", len(urls))
                cited = []
            events, self.next_index = citations.text_events(self.next_index, text, cited)
            out += events
        return out + super().finish(saw_done)
