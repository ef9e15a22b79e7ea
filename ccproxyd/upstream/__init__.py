"""Talking to providers: `pool` (one client per provider, the one place that maps transport errors
to ours), the lean transports `http11` (on h11's rules) and `http2` with `h2connection` (on h2's
state machine), `resilience` (retries, the retry budget, the circuit breaker).

May import observe, translate, money, config and errors (config, the other way, holds each
provider's retry and breaker policy from `resilience`)."""
