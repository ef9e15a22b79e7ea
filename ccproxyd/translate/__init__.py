"""Pure protocol translation between the Anthropic Messages API and OpenAI's Chat Completions and
Responses APIs, and the per-provider quirks: `request`, `tools`, `stream`, `response`,
`responses`, `attribution`, `prompt_cache`, `citations`, `server_tools`, `schema_subset`,
`signature`, `reasoning_details` (a provider's reasoning items, carried to the next turn),
`openrouter`; `provider_errors` (what a provider's error answer means in our tree), `sse`
(framing), `tokens` (offline counting), `wire` (the request's shape).  No sockets, no event
loop (tests/test_style.py).

May import money, config, errors and observe.redact."""
