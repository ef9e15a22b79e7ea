"""Token counting with the bundled encodings (no network)."""

from ccproxyd import tokens


def test_bundled_encodings_give_tiktoken_ids():
    # ids as published for these encodings; the Python rank table is dropped after loading
    assert tokens.encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert tokens.encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert tokens.encoding("o200k_base")._mergeable_ranks == {}


def test_count_request_grows_with_every_part():
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hello world"}]}
    with_system = dict(base, system="You are a careful assistant.")
    with_tools = dict(with_system, tools=[{"name": "Bash", "description": "run a command",
                                           "input_schema": {"type": "object"}}])
    counts = [tokens.count_request(b) for b in (base, with_system, with_tools)]
    assert 0 < counts[0] < counts[1] < counts[2]


def test_unknown_encoding_is_a_clear_error():
    try:
        tokens.encoding("p50k_base")
    except tokens.EncodingError as exc:
        assert "p50k_base" in str(exc) and "o200k_base" in str(exc)
    else:
        raise AssertionError("an unknown encoding must raise")
