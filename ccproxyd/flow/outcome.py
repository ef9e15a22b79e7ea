"""The one account of a request: who pays for its answer, and its access line, written once.

A request's `Record` (observe.py) becomes a log line, metrics, a span and a ledger row exactly
once, by `Outcome`, when both of these hold:

- the answer is over: the response went out whole (`responded`, from the response middleware,
  with its status), or a stream ended (`streaming` tells the middleware, which runs before a
  stream's body, to leave it to the stream's end), or the client left and no response will reach
  it (`left`, `abandoned`);
- nothing is still being waited for: the usage of a call cut before its end, counted in a task of
  its own (cuts.charge_cut_later: the handler may be cancelled by then), or the end of a shared
  upstream call this request started and left (it runs on for the cache and any follower, and
  this request pays for all of it).

Who pays: the request that ran the upstream call (`pays`); a follower of another request's call
and a cache hit cost nothing and save the whole Claude price.  The request that started a flight
here pays for a call that ran here, also one this daemon took over from another daemon it was
following (team mode: flow.fleet); it knows once the flight's answer began or ended (`settled`).
Client limits charge only a payer.

A request whose client left keeps the status it had then (200: no response, and no error, reached
it afterwards): neither Sanic's own 500 for the cancelled handler nor the error of a call cut after
it left is its status.
"""

from __future__ import annotations

from typing import Callable

from ..observe import access as observe
from . import cuts, proxy
from .cache import Flight
from ..config.table import RouteTable


class Outcome:
    def __init__(self, record: observe.Record, table: RouteTable) -> None:
        self.record = record
        self.table = table                # the request's one reading of the routing table
        self.pays = True                  # False: a cache hit, or a follower of another's call
        self.first = False                # it started the flight it follows (it pays if the call runs here)
        self.streaming = False            # the response middleware runs before the body
        self.gone = False                 # the client left: no response, nor a later error, reaches it
        self.ended = False                # the answer is over for this request
        self.waiting = 0                  # counts and calls still to end before the line
        self.emitted = False
        self.answered_here = False        # this request's own call is over (direct)
        self.on_emit: Callable[[], None] | None = None   # then: the client's limits are charged

    # ------------------------------------------------------------ when the line is written

    def responded(self, status: int) -> None:
        """The response middleware: a whole answer (or an error) is going out now.  Not for a
        request whose client left: what Sanic answers its cancelled handler reaches nobody."""
        if self.streaming or self.gone:
            return
        self.record.status = status
        self._end()

    def _end(self) -> None:
        self.ended = True
        self._emit_when_done()

    def _wait(self) -> None:
        self.waiting += 1

    def _waited(self) -> None:
        self.waiting -= 1
        self._emit_when_done()

    def _emit_when_done(self) -> None:
        if self.ended and not self.waiting and not self.emitted:
            self.emitted = True
            observe.emit(self.record)
            if self.on_emit is not None:
                self.on_emit()

    def abandoned(self) -> None:
        """The handler was cancelled (its client left): no response will go out.  The answer is
        over for this request wherever it was (before or while its upstream call was opened, a
        whole answer being read, a stream); it is written once the figures still to come are in
        (a cut call's count, a shared call this request pays for)."""
        self.gone = True
        self._end()

    # ------------------------------------------------------------ who pays, for what

    def direct(self, answer: proxy.Answer) -> None:
        """This request's own upstream call is over: whole, broken, or left by its client.  A call
        cut before its usage came is billed all the same: counted first, then written."""
        self.answered_here = True
        if answer.translator.final_usage is None:
            self._wait()
            cuts.charge_cut_later(answer, lambda: self._then_waited(self.record.answered, answer, self.table))
        else:
            self.record.answered(answer, self.table)
        if self.streaming:                # a whole answer ends when its response (an error) goes out
            self._end()

    def _then_waited(self, account: Callable, *args) -> None:
        try:
            account(*args)
        finally:
            self._waited()

    def hit(self, message: dict, target) -> None:
        """A stored answer served again: nothing paid, the whole Claude price saved."""
        self.pays = False
        self.record.cache = "hit"
        self.record.hit(message, target, self.table)

    def sharing(self, leads: bool, first: bool = False) -> None:
        """This request follows a flight: the one that leads it pays.  `first`: it started the
        flight here (in team mode it may follow another daemon's call: see `settled`)."""
        self.pays = leads
        self.first = first
        self.record.cache = "miss" if leads else "hit"

    def settled(self, flight: Flight) -> str:
        """Who pays for `flight`, once its answer began or ended: the request that started it here
        pays for a call that ran here (team mode: one this daemon took over when the daemon it
        followed went quiet, or Redis went away), as a leader does; its other followers do not.
        Returns the cache result (the x-ccproxyd-cache header)."""
        if self.first and flight.here and not self.pays:
            self.sharing(leads=True, first=True)
        return self.record.cache

    def answered_by(self, flight: Flight) -> None:
        """A whole (non-streamed) answer from `flight`: written when the response goes out."""
        self._answered(flight)

    def followed(self, flight: Flight) -> None:
        """A streamed answer from `flight` ended for this request, or its client left mid-stream
        (the call still runs)."""
        if not flight.done:
            self.gone = True
        self._account_when_over(flight)
        self._end()

    def left(self, flight: Flight) -> None:
        """The client left before its answer began (a stream's first byte, a whole answer): no
        response will go out.  A payer, or the request that started the flight (it pays if the
        call runs here after all), is accounted for when the call ends; anyone else got and paid
        nothing, and is written now, as it is."""
        self.gone = True
        if self.pays or self.first:
            self._wait()
            flight.on_finish(lambda: self._then_waited(self._account_if_paid, flight))
        self._end()

    def _account_if_paid(self, flight: Flight) -> None:
        self.settled(flight)
        if self.pays:
            self._account(flight)

    def _account_when_over(self, flight: Flight) -> None:
        self.settled(flight)
        if flight.done or not self.pays:
            return self._account(flight)
        self._wait()
        flight.on_finish(lambda: self._then_waited(self._account, flight))

    def _account(self, flight: Flight) -> None:
        self._answered(flight)
        if flight.error is not None and not self.gone:
            self.record.failed(flight.error)

    def _answered(self, flight: Flight) -> None:
        """The figures of the call here; or, for an answer no call here made (team mode: the
        fleet's stored answer, another daemon's call), those of its message and who answered it,
        and for another daemon's call that broke, who answered it (as a local follower's)."""
        self.settled(flight)
        if flight.answer is None and flight.origin is not None:
            if flight.message is not None:
                self.record.relayed(flight.message, flight.origin, self.table)
            else:
                self.record.broke(flight.origin)
        else:
            self.record.answered(flight.answer, self.table, paid=self.pays)

    # ------------------------------------------------------------ the client's limits

    def tokens_used(self) -> int:
        """What a client's tpm is charged: nothing for an answer it did not pay for."""
        r = self.record
        return r.input_tokens + r.cached_tokens + r.output_tokens if self.pays else 0

    def cost(self) -> float | None:
        return self.record.cost_usd if self.pays else None
