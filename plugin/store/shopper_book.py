"""A batch's shoppers held in memory: their rows, orders, refunds, open checkouts and pending runs, read in
one statement per table before the batch applies anything, and written back in one statement per table
after (issue 13, point 2).

The handlers of a batch's order, customer, consent and refund deliveries then run per delivery, in
delivery order, exactly as one delivery at a time would, but against this book instead of the database:
a recount, the facts as of an event, the pending plays a stage entry supersedes and a new run's
idempotency key are all answered from memory. So every transition and play is the one a
delivery-at-a-time pass gives (three orders of one shopper in one batch still record prospect →
first_time → repeat), for the cost of a few statements per batch instead of a dozen per delivery.

The book holds only shoppers that nothing else in the batch touches (`pipeline.batch` picks them: every
delivery naming them, their orders or their checkouts is of a topic the book serves), so no handler of
the batch reads their rows from the database meanwhile. Store functions find it on the session
(`session.info[BOOK]`, as `batch_locks` leaves its locks there) and use it for the shoppers it holds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from plugin.core.facts import is_stale
from plugin.store import batch_locks, column_insert, predictions
from plugin.store.db import Database
from plugin.store.models import ActionRun, Checkout, Order, Refund, Shop, Shopper, StageTransition
from plugin.store.run_rows import PENDING, REVIVED, SUPERSEDED, UNDONE, revive_superseded

BOOK = "shopper_book"  # session.info key
# The columns `ShopperBook.write` may set on a stored shopper, in the table's order (one statement text per
# set of changed columns): all but the ones that name it.
SHOPPER_COLUMNS = tuple(
    c.name for c in Shopper.__table__.columns if c.name not in ("id", "shop_id", "customer_id")
)
_WRITTEN = frozenset(SHOPPER_COLUMNS)
CENT = Decimal("0.01")


def money(value) -> Decimal:
    """A sum as the Money column stores it (two places, half up, as PostgreSQL's numeric rounds)."""
    return Decimal(value or 0).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class BookOrder:
    """What counting reads of one stored order."""

    customer_id: int | None
    placed_at: datetime
    cancelled_at: datetime | None
    total: Decimal
    updated_at: datetime | None
    refunds: dict[int, tuple[Decimal, datetime | None]]  # refund id → (amount, created at), shared


@dataclass
class Counts:
    orders_count: int
    total_spent: Decimal
    first_order_at: datetime | None
    last_order_at: datetime | None


class ShopperBook:
    """The batch's shoppers of one transaction, by (shop id, customer id); see the module's docstring."""

    def __init__(self) -> None:
        # (shop id, order id) → {refund id: (amount, created at)}: an order's refunds, held apart from the
        # order since a refund can be stored before its order arrives
        self.refunds: dict[tuple[int, int], dict] = defaultdict(dict)
        self.shoppers: dict[tuple[int, int], Shopper] = {}
        self.by_id: dict[int, Shopper] = {}
        self.orders: dict[tuple[int, int], BookOrder] = {}  # (shop id, order id)
        self.orders_of: dict[tuple[int, int], set[int]] = defaultdict(set)  # (shop, customer) → order ids
        self.open_checkouts: dict[tuple[int, str], int | None] = {}  # (shop id, token) → customer id
        self.checkouts_by_customer: dict[tuple[int, int], list] = defaultdict(list)
        # idempotency key → a run loaded (pending, or held out: `run_rows.UNDONE`), or a new one
        self.runs: dict[str, ActionRun] = {}
        self.pending: dict[int, list[ActionRun]] = defaultdict(list)  # shopper id → its runs above
        self.new_runs: list[ActionRun] = []  # planned in this batch, inserted by `write`
        self.new_transitions: list[dict] = []  # stage_transitions rows recorded in this batch, likewise
        self.columns: tuple[str, ...] = ()  # of the rows `run_rows.planned_values` gives
        self.predictions: dict[int, Any] = {}
        # Ids of the stored runs above, locked as the book read them (PostgreSQL: `FOR UPDATE`, in id
        # order, until the batch commits). A worker or the tick that took one of them first had committed
        # its new status before the lock was granted, and the read left the run out; none can take one
        # now. So their statuses stay as read, and `runs.still_pending` need not read them again: one
        # statement per shop where it would otherwise be one per shopper whose plays change.
        self.locked_runs: set[int] = set()
        self.db: Database | None = None  # set by `load`; `_write_shoppers` needs its dialect

    # -- reading, one statement per table -------------------------------------------------------------

    @classmethod
    def load(
        cls, db: Database, session: Session, wanted: dict[Shop, tuple[set[int], set[int]]]
    ) -> ShopperBook:
        """Read the shoppers (created when new) of each shop's customer ids, their orders and those of
        its order ids, the refunds of all these orders, open checkouts and pending runs."""
        book = cls()
        book.db = db
        for shop, (customer_ids, order_ids) in wanted.items():
            book._load_shop(db, session, shop, sorted(customer_ids), sorted(order_ids))
        session.info[BOOK] = book
        return book

    def _load_shop(
        self, db: Database, session: Session, shop: Shop, customer_ids: list[int], order_ids: list[int]
    ) -> None:
        if customer_ids:
            # Created as `shoppers.lock_shopper` creates a customer seen first, unless the batch's locks
            # (PostgreSQL) already hold the row.
            locked = session.info.get(batch_locks.LOCKED_SHOPPERS, ())
            unlocked = [customer_id for customer_id in customer_ids if (shop.id, customer_id) not in locked]
            if unlocked:
                column_insert.insert_rows(
                    db,
                    session,
                    Shopper.__table__,
                    [batch_locks.new_shopper(shop.id, customer_id) for customer_id in unlocked],
                    skip_conflicts_on=("shop_id", "customer_id"),
                )
            for shopper in session.scalars(
                select(Shopper).where(Shopper.shop_id == shop.id, db.among(Shopper.customer_id, customer_ids))
            ):
                self.shoppers[(shop.id, shopper.customer_id)] = shopper
                self.by_id[shopper.id] = shopper
        rows = session.execute(
            select(
                Order.order_id,
                Order.customer_id,
                Order.placed_at,
                Order.cancelled_at,
                Order.total_price,
                Order.source_updated_at,
            ).where(
                Order.shop_id == shop.id,
                db.among(Order.customer_id, customer_ids) | db.among(Order.order_id, order_ids),
            )
        )
        for order_id, customer_id, placed, cancelled, total, updated in rows:
            refunds = self.refunds[(shop.id, order_id)]
            self._hold(shop.id, order_id, BookOrder(customer_id, placed, cancelled, total, updated, refunds))
        held = {order_id for shop_id, order_id in self.orders if shop_id == shop.id} | set(order_ids)
        for order_id, refund_id, amount, created in session.execute(  # a refund may precede its order
            select(Refund.order_id, Refund.refund_id, Refund.amount, Refund.created_at).where(
                Refund.shop_id == shop.id, db.among(Refund.order_id, sorted(held))
            )
        ):
            self.refunds[(shop.id, order_id)][refund_id] = (amount, created)
        if not customer_ids:
            return
        for token, customer_id in session.execute(
            select(Checkout.token, Checkout.customer_id).where(
                Checkout.shop_id == shop.id,
                db.among(Checkout.customer_id, customer_ids),
                Checkout.completed_at.is_(None),
                Checkout.closed_at.is_(None),
            )
        ):
            self.open_checkouts[(shop.id, token)] = customer_id
            self.checkouts_by_customer[(shop.id, customer_id)].append((shop.id, token))
        ids = [self.shoppers[(shop.id, c)].id for c in customer_ids]
        undone = select(ActionRun).where(db.among(ActionRun.shopper_id, ids), ActionRun.status.in_(UNDONE))
        if not db.is_sqlite:  # locked as read: see `locked_runs`
            undone = undone.order_by(ActionRun.id).with_for_update()
        for run in session.scalars(undone):
            self.runs[run.idempotency_key] = run
            self.pending[run.shopper_id].append(run)
            self.locked_runs.add(run.id)
        self.predictions.update(predictions.personal_predictions(session, shop, ids))

    # -- what the handlers ask ------------------------------------------------------------------------

    def objects(self) -> set:
        """The rows the book holds in the session (kept, not expired, between other deliveries)."""
        return {*self.by_id.values(), *(run for run in self.runs.values() if run.id is not None)}

    def shopper(self, shop_id: int, customer_id: int) -> Shopper | None:
        return self.shoppers.get((shop_id, customer_id))

    def holds(self, shopper: Shopper) -> bool:
        return self.by_id.get(shopper.id) is shopper

    def apply_order(self, shop_id: int, order) -> None:
        """An order delivery's facts, as `handlers.orders` stores them: the version unless it is older
        than the one held, its refunds once by id, the checkout it completes."""
        key = (shop_id, order.id)
        held = self.orders.get(key)
        if held is None or not is_stale(held.updated_at, order.updated_at):
            self._hold(
                *key,
                BookOrder(
                    order.customer.id if order.customer else None,
                    order.processed_at or order.created_at,
                    order.cancelled_at,
                    money(order.total_price),
                    order.updated_at,
                    self.refunds[key],
                ),
            )
        for refund in order.refunds:
            self.refunds[(shop_id, refund.order_id)].setdefault(
                refund.id, (money(refund.amount), refund.created_at)
            )
        if order.checkout_token:
            self.open_checkouts.pop((shop_id, order.checkout_token), None)

    def apply_refund(self, shop_id: int, refund) -> int | None:
        """A refunds/create delivery's facts, as `handlers.orders` stores them (once by refund id); returns
        the buyer of its order as held now (None: no such order yet, or a guest's)."""
        self.refunds[(shop_id, refund.order_id)].setdefault(
            refund.id, (money(refund.amount), refund.created_at)
        )
        order = self.orders.get((shop_id, refund.order_id))
        return order.customer_id if order is not None else None

    def _hold(self, shop_id: int, order_id: int, order: BookOrder) -> None:
        held = self.orders.get((shop_id, order_id))
        if held is not None:
            self.orders_of[(shop_id, held.customer_id)].discard(order_id)
        self.orders[(shop_id, order_id)] = order
        self.orders_of[(shop_id, order.customer_id)].add(order_id)

    def _orders_of(self, shopper: Shopper) -> list[BookOrder]:
        shop_id = shopper.shop_id
        return [self.orders[(shop_id, i)] for i in self.orders_of.get((shop_id, shopper.customer_id), ())]

    def counts(self, shopper: Shopper) -> Counts:
        """As `shoppers.recount_orders` counts in SQL: kept orders, net of all their refunds."""
        kept = self.kept_orders(shopper)
        spent = sum((net for _, net in kept), Decimal(0))
        placed = [placed_at for placed_at, _ in kept]
        return Counts(len(kept), money(spent), min(placed, default=None), max(placed, default=None))

    def kept_orders(self, shopper: Shopper) -> list[tuple[datetime, Decimal]]:
        """(placed at, net of all its refunds) of each kept order, as `counts` sums them."""
        return [
            (o.placed_at, max(o.total - sum(a for a, _ in o.refunds.values()), Decimal(0)))
            for o in self._orders_of(shopper)
            if o.cancelled_at is None
        ]

    def counts_as_of(self, shopper: Shopper, at: datetime) -> Counts:
        """As `shoppers.profile_as_of` counts in SQL: orders placed before `at`, not cancelled by then,
        net of the refunds made before then."""
        kept = [
            o
            for o in self._orders_of(shopper)
            if o.placed_at < at and (o.cancelled_at is None or o.cancelled_at > at)
        ]
        spent = Decimal(0)
        for o in kept:
            refunded = sum(
                (a for a, made in o.refunds.values() if made is not None and made < at), Decimal(0)
            )
            spent += max(o.total - refunded, Decimal(0))
        placed = [o.placed_at for o in kept]
        return Counts(len(kept), money(spent), min(placed, default=None), max(placed, default=None))

    def checkout_open(self, shopper: Shopper) -> bool:
        return any(self.open_checkouts.get(key) == shopper.customer_id for key in self.checkouts_of(shopper))

    def checkouts_of(self, shopper: Shopper) -> list[tuple[int, str]]:
        return self.checkouts_by_customer.get((shopper.shop_id, shopper.customer_id), [])

    def pending_runs(self, shopper: Shopper, held_out: bool = False) -> list[ActionRun]:
        """The shopper's runs not yet acted on (and, with `held_out`, those held out when planned)."""
        wanted = UNDONE if held_out else PENDING
        return [run for run in self.pending.get(shopper.id, ()) if run.status in wanted]

    def store_run(self, values: dict) -> int | None:
        """`run_rows.store_run` against the book: a new key becomes a new run (inserted by `write`); a key
        held whose run was superseded comes back with these values; any other held key is left alone.
        Returns the id of a revived stored run (a new one has no id until `write`)."""
        held = self.runs.get(values["idempotency_key"])
        if held is None:
            run = ActionRun(**values)
            self.columns = tuple(values)
            self.runs[run.idempotency_key] = run
            self.new_runs.append(run)
            if run.shopper_id is not None:
                self.pending[run.shopper_id].append(run)
            return None
        if held.status == "cancelled" and (held.skip_reason or "").startswith(SUPERSEDED):
            for name in REVIVED:
                setattr(held, name, values[name])
            return held.id
        return None

    # -- writing back, one statement per table --------------------------------------------------------

    def write(self, db: Database, session: Session) -> list[int]:
        """Update the shoppers the handlers changed in one statement (`_write_shoppers`) and flush the
        loaded runs they changed; insert the batch's transitions and its new runs, a statement each
        (`column_insert`: one text whatever their number); a run whose key was stored meanwhile (by
        another batch, or before a pending run was loaded) is revived as `run_rows.store_run` would, or
        left alone. Returns the ids of the runs created or revived."""
        self._write_shoppers(session)
        session.info.pop(BOOK, None)
        session.flush()
        column_insert.insert_rows(db, session, StageTransition.__table__, self.new_transitions)
        if not self.new_runs:
            return []
        rows = [{c: getattr(run, c) for c in self.columns} for run in self.new_runs]
        inserted = column_insert.insert_rows(
            db,
            session,
            ActionRun.__table__,
            rows,
            skip_conflicts_on=("idempotency_key",),
            returning=("id", "idempotency_key"),
        )
        created = {key: run_id for run_id, key in inserted}
        ids = list(created.values())
        for row in rows:
            if row["idempotency_key"] in created:
                continue
            revived = revive_superseded(session, row)  # whatever its status, as `run_rows.store_run` does
            if revived is not None and row["status"] in PENDING:
                ids.append(revived)
        return ids

    def _write_shoppers(self, session: Session) -> None:
        """Every held shopper the handlers changed, in one UPDATE of the columns any of them changed, then
        marked as stored, so a flush after it has nothing left to write for them (the ORM's flush runs
        one UPDATE per shopper, an executemany per set of changed columns). Runs at `write` and before
        every flush while the book is open (`_before_flush`): a query's autoflush, or the flush after a
        delivery the book does not serve."""
        changed = {}
        for shopper in self.by_id.values():
            state = inspect(shopper)
            if (
                state.persistent
                and state.modified
                and (keys := [k for k in state.committed_state if k in _WRITTEN])
            ):
                changed[shopper] = keys  # anything else (none today) is left to the flush
        if not changed:
            return
        names = set().union(*changed.values())
        columns = ("id", *(column for column in SHOPPER_COLUMNS if column in names))
        rows = [{column: getattr(shopper, column) for column in columns} for shopper in changed]
        with session.no_autoflush:  # the statement's own autoflush would come back here
            updated = column_insert.update_rows(self.db, session, Shopper.__table__, rows)
        if updated != len(rows):  # as the ORM's flush would raise: the batch is rolled back and split
            raise StaleDataError(
                f"{len(rows) - updated} of the batch's {len(rows)} changed shoppers are gone"
            )
        for shopper, keys in changed.items():
            for key in keys:
                set_committed_value(shopper, key, getattr(shopper, key))


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _flush_context, _instances) -> None:
    """While a batch's book is open, its changed shoppers go in its one UPDATE before any flush."""
    book = session.info.get(BOOK)
    if book is not None:
        book._write_shoppers(session)


def of(session: Session) -> ShopperBook | None:
    """The batch's book, while it is open."""
    return session.info.get(BOOK)


def holding(session: Session, shopper: Shopper) -> ShopperBook | None:
    """The batch's book when it holds this shopper, else None (the database is the truth)."""
    book = session.info.get(BOOK)
    return book if book is not None and book.holds(shopper) else None
