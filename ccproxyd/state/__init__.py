"""What outlives a request, each concept behind one protocol with one contract test over its
implementations (tests/test_backends_*.py): `answers` (the response cache on disk), `thread_store`
(thread points: memory, disk; `threads` is the Redis one), `clients` (client limit counters: local;
`limits` is the Redis one), `ledger` (the spend ledger), `holds` (provider holds across a fleet),
`link` (the Redis connection), `batching` (the writer thread the answer store and the ledger
share), `outage` (one outage log and damaged-file handling for every store).

May import upstream, observe, translate, money, config and errors; flow and server import it."""
