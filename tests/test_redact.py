"""observe.redact.scrub: every form of every registered key is masked, wherever it falls in a
text; a text that holds none comes back as the same object (scrub_bytes relies on it)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings, strategies as st

from ccproxyd.observe import redact

KEYS = ("sk-proj-Ab3/xY9+zz_0123456789", "gsk_live_QWERTYUIOPASDFGHJ", "AIzaSyD-short-key-1234567")


@pytest.fixture(autouse=True)
def registered():
    redact.clear()
    for key in KEYS:
        redact.register(key)
    yield
    redact.clear()


FORMS = sorted(redact._variants(KEYS[0]) | redact._variants(KEYS[1]) | redact._variants(KEYS[2]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30), st.sampled_from(FORMS)), max_size=12))
def test_no_form_of_a_key_survives_and_a_clean_text_is_returned_as_it_is(pieces):
    text = "".join(pieces)
    cleaned = redact.scrub(text)
    assert not any(form in cleaned for form in FORMS)
    if not any(form in text for form in FORMS):
        assert cleaned is text
    else:
        assert redact.MASK in cleaned


def test_the_forms_an_upstream_echoes_are_masked():
    key = KEYS[0]
    escaped = key.replace("/", "\\/")                       # JSON's escaped slash
    for echoed in (f"Incorrect API key provided: Bearer {key}.", f'{{"key":"{escaped}"}}',
                   "Basic " + base64.b64encode(f"user:{key}".encode()).decode()):
        assert key[:12] not in redact.scrub(echoed) and redact.MASK in redact.scrub(echoed), echoed
