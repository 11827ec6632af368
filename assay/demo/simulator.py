"""AdventureWorks as monthly exports of three divisions: the demo's named source simulator.

``Simulator`` reads Microsoft's AdventureWorks 2014 sample (shipped gzip-compressed in
``data/adventureworks``, see its PROVENANCE.md; ``--data DIR`` may hold the same files as
``X.csv.gz`` or plain ``X.csv``) and cuts it into what the demo's producers send: one
``Export`` per sync window, division and table, its rows as a CSV export would carry them.

Rules
-----
- Divisions are the SalesTerritory ``Group`` values: North America, Europe, Pacific. A division's
  id is its name in lower case with ``_`` for spaces: north_america, europe, pacific.
- Windows are calendar months ('YYYY-MM') of SalesOrderHeader.OrderDate, every month from the
  first to the last (2011-05..2014-06: 38 windows). Every window carries every table for every
  division; a table with nothing to send that month has 0 rows.
- erp_order: the orders placed in the month, sent to the division of the order's TerritoryID.
  ``CustomerAccount`` is the ordering customer's AW… account number as the ERP keeps it (the
  header's own AccountNumber is a different, unrelated number).
- erp_order_line: the SalesOrderDetail lines of those orders, with their order (lines carry no
  division or month of their own); the ERP's shipment export adds the order's CustomerAccount.
- erp_invoice: one invoice per order, as the ERP's billing export: ``InvoiceID`` 'INV-' + the
  SalesOrderID, the order's CustomerAccount, ``InvoiceDate`` the ShipDate, ``Amount`` TotalDue.
- erp_customer: each customer once, in the window of its first order, to the division of the
  customer's own TerritoryID; customers who never ordered go in the first window.
  AccountNumber is sent exactly as in Customer.csv.
- crm_account: the CRM's copy of the same customers, in the same window and division.
  ``crm_id`` is 'CRM-' + the 8-digit CustomerID. ``account_number`` is the AW… number as a CRM
  mangles it, chosen by CustomerID % 4: 0 as it is, 1 lower case, 2 inside spaces
  ('  AW00000002 '), 3 both; trim and lower case make all of them equal to the ERP's, lower-cased.
  ``kind`` is 'store' for a customer with a StoreID, else 'individual'. ``store_name`` is the
  Store's Name (None for individuals). ``first_name``/``last_name`` come from Person: the
  individual, or for a store its contact person when the customer has a PersonID (None when it
  has none). ``territory`` is the SalesTerritory Name; ``modified_at`` the customer's ModifiedDate.
- erp_product, erp_product_subcategory, erp_product_category: reference data, sent in full to
  every division in the first window, with 0 rows afterwards. Product WeightUnitMeasureCode keeps
  the file's padding ('LB ', 'G  '); Weight is the file's text.
- sales_goal: one row per division, product category and year of the windows (2011..2014):
  ``division`` the division's name ('North America'), ``category`` the ProductCategory Name,
  ``goal_qty`` by the goal rule below. Goals for year Y are sent in Y's January window (the
  first window for the first year), with ``set_at`` 'Y-01-01 00:00:00'.
- ``first``/``last`` select a range of windows. Whatever falls due before ``first`` (reference
  data, customers first seen earlier, earlier years' goals) is sent in ``first``; orders and their
  lines outside the range are not sent.

Malformed sources
-----------------
- A value the routing needs (a timestamp, an id, a reference to another file) that cannot be read
  stops the simulator with a ``SourceError`` naming the file and line.
- An order line is sent on as it is, whatever its values: a line the pipeline's validation will
  quarantine (OrderQty not a whole number from 1 to 100,000, LineTotal not a number >= 0,
  ModifiedDate not a timestamp) counts for no goal. Of several versions of one
  SalesOrderDetailID (a repeated line, a stale older version), the goal rule counts the one
  Silver keeps: the newest ModifiedDate, the later line on a tie.

Values are text, as in a CSV export: None for an empty field, integers and money with the file's
digits, timestamps as 'YYYY-MM-DD HH:MM:SS' with fractional seconds dropped. The published
SalesOrderDetail holds ModifiedDate in UTC ('2011-05-31T05:00:00.0000000Z'); it is sent as that
UTC time ('2011-05-31 05:00:00'), which is how erp_order_line (no timezone in config) reads it.

Goal rule
---------
The data has only money quotas (SalesPersonQuotaHistory: per salesperson and quarter).

1. ``quota(d, Y)``: the sum of SalesQuota with QuotaDate in year Y of the salespeople whose
   territory on QuotaDate is in division d: the SalesTerritoryHistory row covering QuotaDate, or
   SalesPerson.TerritoryID when none covers it. Salespeople with neither (the three sales
   managers) count for no division.
2. The base: the order lines division d shipped (year of the order's ShipDate) in Y-1; when d
   shipped nothing in Y-1 (the first year), its lines of all years.
3. The quota is split across categories by their share of the base's revenue (sum of
   LineTotal), and each part is divided by the category's average unit price in the base (its
   LineTotal sum / OrderQty sum). That simplifies to
   ``goal_qty(d, c, Y) = quota(d, Y) × qty(base, c) / revenue(base)``, rounded half up to an
   integer: the category's base quantity scaled by the division's quota / base revenue. It is 0
   when the division has no quota that year or the category shipped nothing in the base.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import IO, NamedTuple

from assay.contracts.messages import Scalar
from assay.resources import ADVENTUREWORKS, resource

Row = dict[str, Scalar]

DEFAULT_DATA_DIR = resource(ADVENTUREWORKS)
"""The AdventureWorks files shipped with the project (in the package: ``assay.resources``)."""

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "erp_product_category": ("ProductCategoryID", "Name", "ModifiedDate"),
    "erp_product_subcategory": ("ProductSubcategoryID", "ProductCategoryID", "Name",
                                "ModifiedDate"),
    "erp_product": ("ProductID", "Name", "ProductNumber", "Weight", "WeightUnitMeasureCode",
                    "ProductSubcategoryID", "ModifiedDate"),
    "crm_account": ("crm_id", "account_number", "kind", "store_name", "first_name", "last_name",
                    "territory", "modified_at"),
    "erp_customer": ("CustomerID", "PersonID", "StoreID", "TerritoryID", "AccountNumber",
                     "ModifiedDate"),
    "erp_order": ("SalesOrderID", "OrderDate", "DueDate", "ShipDate", "Status", "CustomerID",
                  "AccountNumber", "TerritoryID", "SubTotal", "TotalDue", "ModifiedDate",
                  "CustomerAccount"),
    "erp_order_line": ("SalesOrderID", "SalesOrderDetailID", "OrderQty", "ProductID",
                       "UnitPrice", "LineTotal", "ModifiedDate", "CustomerAccount"),
    "erp_invoice": ("InvoiceID", "SalesOrderID", "CustomerAccount", "InvoiceDate", "Amount",
                    "ModifiedDate"),
    "sales_goal": ("division", "category", "year", "goal_qty", "set_at"),
}
"""The columns of each exported table (as in config/*.json), tables in the order yielded."""

TABLES: tuple[str, ...] = tuple(TABLE_COLUMNS)

COLUMNS: dict[str, tuple[str, ...]] = {
    "Customer": ("CustomerID", "PersonID", "StoreID", "TerritoryID", "AccountNumber", "rowguid",
                 "ModifiedDate"),
    "Store": ("BusinessEntityID", "Name", "SalesPersonID", "Demographics", "rowguid",
              "ModifiedDate"),
    "SalesTerritory": ("TerritoryID", "Name", "CountryRegionCode", "Group", "SalesYTD",
                       "SalesLastYear", "CostYTD", "CostLastYear", "rowguid", "ModifiedDate"),
    "SalesTerritoryHistory": ("BusinessEntityID", "TerritoryID", "StartDate", "EndDate",
                              "rowguid", "ModifiedDate"),
    "SalesPerson": ("BusinessEntityID", "TerritoryID", "SalesQuota", "Bonus", "CommissionPct",
                    "SalesYTD", "SalesLastYear", "rowguid", "ModifiedDate"),
    "SalesPersonQuotaHistory": ("BusinessEntityID", "QuotaDate", "SalesQuota", "rowguid",
                                "ModifiedDate"),
    "Product": ("ProductID", "Name", "ProductNumber", "MakeFlag", "FinishedGoodsFlag", "Color",
                "SafetyStockLevel", "ReorderPoint", "StandardCost", "ListPrice", "Size",
                "SizeUnitMeasureCode", "WeightUnitMeasureCode", "Weight", "DaysToManufacture",
                "ProductLine", "Class", "Style", "ProductSubcategoryID", "ProductModelID",
                "SellStartDate", "SellEndDate", "DiscontinuedDate", "rowguid", "ModifiedDate"),
    "ProductSubcategory": ("ProductSubcategoryID", "ProductCategoryID", "Name", "rowguid",
                           "ModifiedDate"),
    "ProductCategory": ("ProductCategoryID", "Name", "rowguid", "ModifiedDate"),
    "SalesOrderDetail": ("SalesOrderID", "SalesOrderDetailID", "CarrierTrackingNumber",
                         "OrderQty", "ProductID", "SpecialOfferID", "UnitPrice",
                         "UnitPriceDiscount", "LineTotal", "rowguid", "ModifiedDate"),
}
"""Columns of the headerless files, in file order."""

HEADER_COLUMNS: dict[str, tuple[str, ...]] = {
    "SalesOrderHeader": TABLE_COLUMNS["erp_order"][:-1],
    "Person": ("BusinessEntityID", "FirstName", "LastName"),
}
"""The columns read from the files that name theirs in a header row."""

WINDOW_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class SourceError(ValueError):
    """A source file is missing or not in the expected format; the message names it."""

    located = False
    """True once the message names the file and line."""


@dataclass(frozen=True)
class Export:
    """The rows of one table that one division exports for one sync window."""

    division: str
    window: str
    table: str
    rows: list[Row]


class Territory(NamedTuple):
    """A sales territory: its name and its division's id and name (the territory group)."""

    name: str
    division: str
    group: str


class Order(NamedTuple):
    """What routing needs to know of an order: its customer, window, division and ship year."""

    customer: str
    window: str
    division: str
    ship_year: int | None
    account: str


def division_id(group: str) -> str:
    """'North America' -> 'north_america'."""
    return group.lower().replace(" ", "_")


@cache
def timestamp(value: str) -> str | None:
    """'2014-09-12 11:15:07.263000000' or '2011-05-31T05:00:00.0000000Z' -> 'YYYY-MM-DD HH:MM:SS'.

    Fractional seconds are dropped; empty text is None.
    """
    if not value:
        return None
    if len(value) < 19 or value[10] not in " T" or value[4] != "-" or value[13] != ":":
        raise SourceError(f"not a timestamp: {value!r}")
    return f"{value[:10]} {value[11:19]}"


def crm_account_number(account: str, customer_id: int) -> str:
    """How the CRM holds an ERP account number: as is, lower case, padded, or both."""
    match customer_id % 4:
        case 1:
            return account.lower()
        case 2:
            return f"  {account} "
        case 3:
            return f" {account.lower()}  "
        case _:
            return account


def goal_qty(quota: Decimal, base_qty: int, base_revenue: Decimal) -> int:
    """The goal rule's last step: the category's base quantity scaled by quota / base revenue."""
    if not base_revenue:
        return 0
    return int((quota * base_qty / base_revenue).to_integral_value(ROUND_HALF_UP))


def source_path(data_dir: Path, name: str) -> Path:
    """``name.csv.gz`` in the folder, else ``name.csv``."""
    for path in (data_dir / f"{name}.csv.gz", data_dir / f"{name}.csv"):
        if path.is_file():
            return path
    raise SourceError(f"{data_dir}: neither {name}.csv.gz nor {name}.csv found")


class SourceFile:
    """One AdventureWorks file, row by row as dicts of text, whatever the file's layout.

    Iterate it inside ``with``: a value that cannot be read (a bad timestamp, number or
    reference) raised while a row is handled becomes a ``SourceError`` naming the file and line.
    """

    def __init__(self, data_dir: Path, name: str) -> None:
        self.name = name
        self.path = source_path(data_dir, name)
        self.line = 0

    def __enter__(self) -> SourceFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if isinstance(exc, SourceError) and exc.located:
            return
        if isinstance(exc, (ValueError, ArithmeticError, LookupError)):
            raise self.error(f"{exc}" if isinstance(exc, SourceError)
                             else f"{type(exc).__name__}: {exc}") from exc

    def error(self, message: str) -> SourceError:
        """A SourceError naming this file and the line being read."""
        where = f"{self.path}: line {self.line}" if self.line else str(self.path)
        error = SourceError(f"{where}: {message}")
        error.located = True
        return error

    def __iter__(self) -> Iterator[dict[str, str]]:
        if self.name == "Person":
            rows: Iterator[tuple[int, list[str]]] = _microsoft_rows(self.path)
        else:
            rows = _csv_rows(self.path, "," if self.name == "SalesOrderDetail" else "\t")
        try:
            yield from self._dicts(rows)
        except (UnicodeDecodeError, EOFError, OSError, csv.Error) as exc:
            raise self.error(f"unreadable: {exc}") from exc

    def _dicts(self, rows: Iterator[tuple[int, list[str]]]) -> Iterator[dict[str, str]]:
        wanted = HEADER_COLUMNS.get(self.name)
        if wanted is None:
            names = COLUMNS[self.name]
        else:
            self.line, header = next(rows, (1, []))
            names = tuple(h.strip().lstrip("\ufeff") for h in header)
            missing = [c for c in wanted if c not in names]
            if missing:
                raise self.error(f"header lacks {missing}")
        for self.line, values in rows:
            if len(values) != len(names):
                raise self.error(f"{len(values)} fields, expected {len(names)}")
            yield dict(zip(names, values, strict=True))


def read_table(data_dir: Path, name: str) -> SourceFile:
    """The rows of one AdventureWorks file (see ``SourceFile``)."""
    return SourceFile(data_dir, name)


def _open(path: Path, encoding: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open(encoding=encoding, newline="")


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the row ends, fields) of each row."""
    with _open(path, "utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        for values in reader:
            yield reader.line_num, values


def _microsoft_rows(path: Path, chunk: int = 1 << 20) -> Iterator[tuple[int, list[str]]]:
    """Microsoft's raw export: UTF-16 with BOM, fields split by ``+|``, rows ended by ``&|CRLF``.

    Rows are numbered from 1 (the header), as the lines they are in that format.
    """
    number = 0
    with _open(path, "utf-16") as f:
        rest = ""
        while text := f.read(chunk):
            *records, rest = (rest + text).split("&|\r\n")
            for record in records:
                number += 1
                yield number, record.split("+|")
        if rest.strip():
            yield number + 1, rest.split("+|")


def _months(first: str, last: str) -> list[str]:
    """Every 'YYYY-MM' from first to last."""
    year, month = int(first[:4]), int(first[5:7])
    months = []
    while (current := f"{year:04d}-{month:02d}") <= last:
        months.append(current)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _check_window(value: str | None, name: str) -> None:
    if value is not None and not WINDOW_RE.match(value):
        raise ValueError(f"{name} must be a window 'YYYY-MM', not {value!r}")


class Plan:
    """Rows per (window, division, table), kept as tuples of shared values to save memory.

    Values are text or None, as the simulator sends them (sharing by equality would mix up
    ``1`` and ``True``).
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], list[tuple[Scalar, ...]]] = defaultdict(list)
        self._shared: dict[Scalar, Scalar] = {}
        self._pick = {table: itemgetter(*columns) for table, columns in TABLE_COLUMNS.items()}

    def add(self, window: str, division: str, table: str, row: Row) -> None:
        values = self._pick[table](row)
        self.rows[(window, division, table)].append(
            tuple(map(self._shared.setdefault, values, values)))

    def get(self, window: str, division: str, table: str) -> list[Row]:
        columns = TABLE_COLUMNS[table]
        return [dict(zip(columns, values, strict=True))
                for values in self.rows.get((window, division, table), ())]

    def seal(self) -> None:
        """Forget the lookup of shared values once everything is added."""
        self._shared = {}


class Simulator:
    """AdventureWorks cut into monthly exports per division and table (rules: module docstring)."""

    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR, *, first: str | None = None,
                 last: str | None = None) -> None:
        _check_window(first, "first")
        _check_window(last, "last")
        self.data_dir = data_dir
        self._first, self._last = first, last
        self._plan = Plan()
        territories = _territories(data_dir)
        self.divisions: dict[str, str] = {t.division: t.group for t in territories.values()}
        with read_table(data_dir, "Customer") as source:
            accounts = {c["CustomerID"]: c["AccountNumber"] for c in source}
        orders = self._send_orders(data_dir, territories, accounts)
        if not orders:
            raise SourceError(f"{data_dir}: SalesOrderHeader holds no orders")
        all_windows = _months(min(o.window for o in orders.values()),
                              max(o.window for o in orders.values()))
        self._windows = [w for w in all_windows if self._due(w) == w]
        reference = _reference(data_dir)
        for table, rows in reference.items():
            for division in self.divisions:
                for row in rows:
                    self._send(all_windows[0], division, table, row)
        shipped = self._send_lines(data_dir, orders, _product_categories(reference))
        self._send_customers(data_dir, territories, orders, all_windows[0])
        categories = [str(row["Name"]) for row in reference["erp_product_category"]]
        self._send_goals(_quotas(data_dir, territories), shipped, categories, all_windows)
        self._plan.seal()

    def windows(self) -> list[str]:
        """The sync windows 'YYYY-MM' of the selected range, in order."""
        return list(self._windows)

    def exports(self) -> Iterator[Export]:
        """Every (window, division, table) in window order, 0-row tables included."""
        for window in self._windows:
            for division in self.divisions:
                for table in TABLES:
                    yield Export(division=division, window=window, table=table,
                                 rows=self._plan.get(window, division, table))

    def _due(self, window: str) -> str | None:
        """The window something due in ``window`` is sent in: the range's first at the earliest."""
        sent = max(window, self._first or window)
        return None if self._last is not None and sent > self._last else sent

    def _in_range(self, window: str) -> bool:
        return self._due(window) == window

    def _send(self, window: str, division: str, table: str, row: Row) -> None:
        due = self._due(window)
        if due is not None:
            self._plan.add(due, division, table, row)

    def _send_orders(self, data_dir: Path, territories: dict[str, Territory],
                     accounts: dict[str, str]) -> dict[str, Order]:
        """Route each order to its month and division; return every order's routing."""
        orders: dict[str, Order] = {}
        with read_table(data_dir, "SalesOrderHeader") as source:
            for h in source:
                self._send_order(h, territories, accounts, orders)
        return orders

    def _send_order(self, h: dict[str, str], territories: dict[str, Territory],
                    accounts: dict[str, str], orders: dict[str, Order]) -> None:
        """Route one order header (and its invoice) to its month and division."""
        territory = territories.get(h["TerritoryID"])
        if territory is None:
            raise SourceError(f"SalesOrderHeader {h['SalesOrderID']}: unknown TerritoryID"
                              f" {h['TerritoryID']!r}")
        ordered, shipped = timestamp(h["OrderDate"]), timestamp(h["ShipDate"])
        if ordered is None:
            raise SourceError(f"SalesOrderHeader {h['SalesOrderID']}: no OrderDate")
        account = accounts.get(h["CustomerID"])
        if account is None:
            raise SourceError(f"SalesOrderHeader {h['SalesOrderID']}: unknown CustomerID"
                              f" {h['CustomerID']!r}")
        order = Order(customer=h["CustomerID"], window=ordered[:7],
                      division=territory.division,
                      ship_year=int(shipped[:4]) if shipped else None,
                      account=account)
        orders[h["SalesOrderID"]] = order
        if self._in_range(order.window):
            row = _erp_order(h)
            row["CustomerAccount"] = account
            self._plan.add(order.window, order.division, "erp_order", row)
            self._plan.add(order.window, order.division, "erp_invoice", {
                "InvoiceID": f"INV-{h['SalesOrderID']}",
                "SalesOrderID": h["SalesOrderID"],
                "CustomerAccount": account,
                "InvoiceDate": row["ShipDate"],
                "Amount": h["TotalDue"] or None,
                "ModifiedDate": row["ModifiedDate"],
            })

    def _send_lines(self, data_dir: Path, orders: dict[str, Order],
                    categories: dict[str, str | None]) -> Shipments:
        """Route each order line with its order; count the shipped lines for the goal rule.

        A line whose values the pipeline would refuse (``_counted``) is sent on unchanged, for
        validation to quarantine, and left out of the goal rule; of several versions of a line
        (one SalesOrderDetailID), the goal rule counts the one Silver keeps.
        """
        counted: dict[str, tuple[str, str, str, int, int, Decimal]] = {}
        with read_table(data_dir, "SalesOrderDetail") as source:
            for line in source:
                order = orders.get(line["SalesOrderID"])
                if order is None or line["ProductID"] not in categories:
                    raise SourceError(f"SalesOrderDetail {line['SalesOrderDetailID']}: unknown"
                                      f" SalesOrderID {line['SalesOrderID']} or ProductID"
                                      f" {line['ProductID']}")
                category = categories[line["ProductID"]]
                value = _counted(line)
                if order.ship_year is not None and category is not None and value is not None:
                    modified, qty, revenue = value
                    kept = counted.get(line["SalesOrderDetailID"])
                    if kept is None or modified >= kept[0]:
                        counted[line["SalesOrderDetailID"]] = (
                            modified, order.division, category, order.ship_year, qty, revenue)
                if self._in_range(order.window):
                    self._plan.add(order.window, order.division, "erp_order_line", {
                        "SalesOrderID": line["SalesOrderID"],
                        "SalesOrderDetailID": line["SalesOrderDetailID"],
                        "OrderQty": line["OrderQty"] or None,
                        "ProductID": line["ProductID"],
                        "UnitPrice": line["UnitPrice"] or None,
                        "LineTotal": line["LineTotal"] or None,
                        "ModifiedDate": _as_sent(line["ModifiedDate"]),
                        "CustomerAccount": order.account,
                    })
        shipped = Shipments()
        for _, division, category, year, qty, revenue in counted.values():
            shipped.add(division, category, year, qty, revenue)
        return shipped

    def _send_customers(self, data_dir: Path, territories: dict[str, Territory],
                        orders: dict[str, Order], first_window: str) -> None:
        """ERP and CRM copies of each customer, in the window of its first order."""
        first_order: dict[str, str] = {}
        for order in orders.values():
            if order.window < first_order.get(order.customer, "9999"):
                first_order[order.customer] = order.window
        with read_table(data_dir, "Store") as source:
            stores = {s["BusinessEntityID"]: s["Name"] for s in source}
        customers: list[tuple[dict[str, str], Territory]] = []
        with read_table(data_dir, "Customer") as source:
            for customer in source:
                territory = territories.get(customer["TerritoryID"])
                if territory is None:
                    raise SourceError(f"Customer {customer['CustomerID']}: unknown TerritoryID"
                                      f" {customer['TerritoryID']!r}")
                if customer["StoreID"] and customer["StoreID"] not in stores:
                    raise SourceError(f"Customer {customer['CustomerID']}: unknown StoreID"
                                      f" {customer['StoreID']}")
                int(customer["CustomerID"])
                timestamp(customer["ModifiedDate"])
                customers.append((customer, territory))
        people = _names(data_dir, {c["PersonID"] for c, _ in customers if c["PersonID"]})
        for customer, territory in customers:
            window = first_order.get(customer["CustomerID"], first_window)
            self._send(window, territory.division, "erp_customer", _erp_customer(customer))
            self._send(window, territory.division, "crm_account",
                       _crm_account(customer, territory, stores, people))

    def _send_goals(self, quotas: dict[tuple[str, int], Decimal], shipped: Shipments,
                    categories: list[str], all_windows: list[str]) -> None:
        """One goal per division, category and year, sent in January (or the first window)."""
        first_year, last_year = int(all_windows[0][:4]), int(all_windows[-1][:4])
        for year in range(first_year, last_year + 1):
            window = all_windows[0] if year == first_year else f"{year}-01"
            for division, group in self.divisions.items():
                base_qty, base_revenue = shipped.base(division, year)
                quota = quotas.get((division, year), Decimal(0))
                for category in categories:
                    self._send(window, division, "sales_goal", {
                        "division": group, "category": category, "year": str(year),
                        "goal_qty": str(goal_qty(quota, base_qty.get(category, 0), base_revenue)),
                        "set_at": f"{year}-01-01 00:00:00",
                    })


@dataclass
class Shipments:
    """Shipped quantity per division, category and ship year, and revenue per division and year."""

    qty: dict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    revenue: dict[tuple[str, int], Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def add(self, division: str, category: str, year: int, qty: int, revenue: Decimal) -> None:
        self.qty[(division, category, year)] += qty
        self.revenue[(division, year)] += revenue

    def base(self, division: str, year: int) -> tuple[dict[str, int], Decimal]:
        """The goal rule's base: quantity per category and revenue shipped in year-1, else ever."""
        years = {year - 1} if self.revenue.get((division, year - 1)) else {
            y for d, y in self.revenue if d == division}
        qty: dict[str, int] = defaultdict(int)
        for (d, category, y), n in self.qty.items():
            if d == division and y in years:
                qty[category] += n
        revenue = sum((r for (d, y), r in self.revenue.items() if d == division and y in years),
                      Decimal(0))
        return qty, revenue


def _as_sent(value: str) -> str | None:
    """A timestamp as the exports send it; text that is none is passed on unchanged."""
    try:
        return timestamp(value)
    except SourceError:
        return value


MAX_ORDER_QTY = 100_000
"""The largest OrderQty ``config/erp.json`` accepts."""


def _counted(line: dict[str, str]) -> tuple[str, int, Decimal] | None:
    """(ModifiedDate, OrderQty, LineTotal) of an order line the pipeline accepts, else None.

    The quantity must read as a whole number from 1 to ``MAX_ORDER_QTY``, the line total as a
    number of at least 0, the timestamp as one (as ``config/erp.json`` validates them); a line
    that fails is quarantined by the pipeline, so it counts for no goal.
    """
    try:
        qty = Decimal(line["OrderQty"])
        revenue = Decimal(line["LineTotal"])
        modified = timestamp(line["ModifiedDate"])
    except (ArithmeticError, SourceError):
        return None
    if not (qty.is_finite() and revenue.is_finite()) or qty != qty.to_integral_value():
        return None
    if not 1 <= qty <= MAX_ORDER_QTY or revenue < 0 or modified is None:
        return None
    return modified, int(qty), revenue


def _territories(data_dir: Path) -> dict[str, Territory]:
    with read_table(data_dir, "SalesTerritory") as source:
        return {t["TerritoryID"]: Territory(t["Name"], division_id(t["Group"]), t["Group"])
                for t in source}


def _erp_order(header: dict[str, str]) -> Row:
    row: Row = {column: header[column] or None for column in HEADER_COLUMNS["SalesOrderHeader"]}
    for column in ("OrderDate", "DueDate", "ShipDate", "ModifiedDate"):
        row[column] = timestamp(header[column])
    return row


def _reference(data_dir: Path) -> dict[str, list[Row]]:
    """The three product tables as sent: the file's text, timestamps without fractions."""
    with read_table(data_dir, "ProductCategory") as source:
        categories: list[Row] = [
            {"ProductCategoryID": c["ProductCategoryID"], "Name": c["Name"],
             "ModifiedDate": timestamp(c["ModifiedDate"])} for c in source]
    with read_table(data_dir, "ProductSubcategory") as source:
        subcategories: list[Row] = [
            {"ProductSubcategoryID": s["ProductSubcategoryID"],
             "ProductCategoryID": s["ProductCategoryID"], "Name": s["Name"],
             "ModifiedDate": timestamp(s["ModifiedDate"])} for s in source]
    with read_table(data_dir, "Product") as source:
        products: list[Row] = [
            {"ProductID": p["ProductID"], "Name": p["Name"], "ProductNumber": p["ProductNumber"],
             "Weight": p["Weight"] or None,
             "WeightUnitMeasureCode": p["WeightUnitMeasureCode"] or None,
             "ProductSubcategoryID": p["ProductSubcategoryID"] or None,
             "ModifiedDate": timestamp(p["ModifiedDate"])} for p in source]
    return {"erp_product_category": categories, "erp_product_subcategory": subcategories,
            "erp_product": products}


def _product_categories(reference: dict[str, list[Row]]) -> dict[str, str | None]:
    """ProductID -> its category's name (None for a product without a subcategory)."""
    names = {c["ProductCategoryID"]: str(c["Name"]) for c in reference["erp_product_category"]}
    of_subcategory = {s["ProductSubcategoryID"]: names[s["ProductCategoryID"]]
                      for s in reference["erp_product_subcategory"]}
    return {str(p["ProductID"]): of_subcategory.get(p["ProductSubcategoryID"])
            for p in reference["erp_product"]}


def _names(data_dir: Path, wanted: set[str]) -> dict[str, tuple[str, str]]:
    """(FirstName, LastName) of the wanted Person ids; every one must be there."""
    with read_table(data_dir, "Person") as source:
        names = {p["BusinessEntityID"]: (p["FirstName"], p["LastName"])
                 for p in source if p["BusinessEntityID"] in wanted}
    missing = wanted - names.keys()
    if missing:
        raise SourceError(f"Person: {len(missing)} customers' PersonIDs are missing,"
                          f" e.g. {min(missing)}")
    return names


def _erp_customer(customer: dict[str, str]) -> Row:
    return {
        "CustomerID": customer["CustomerID"], "PersonID": customer["PersonID"] or None,
        "StoreID": customer["StoreID"] or None, "TerritoryID": customer["TerritoryID"],
        "AccountNumber": customer["AccountNumber"],
        "ModifiedDate": timestamp(customer["ModifiedDate"]),
    }


def _crm_account(customer: dict[str, str], territory: Territory, stores: dict[str, str],
                 people: dict[str, tuple[str, str]]) -> Row:
    customer_id = int(customer["CustomerID"])
    first_name, last_name = people.get(customer["PersonID"], ("", ""))
    return {
        "crm_id": f"CRM-{customer_id:08d}",
        "account_number": crm_account_number(customer["AccountNumber"], customer_id),
        "kind": "store" if customer["StoreID"] else "individual",
        "store_name": stores[customer["StoreID"]] if customer["StoreID"] else None,
        "first_name": first_name or None, "last_name": last_name or None,
        "territory": territory.name,
        "modified_at": timestamp(customer["ModifiedDate"]),
    }


def _quotas(data_dir: Path, territories: dict[str, Territory]) -> dict[tuple[str, int], Decimal]:
    """Quota per division and year: each salesperson's quota goes to the territory held then."""
    history: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    with read_table(data_dir, "SalesTerritoryHistory") as source:
        for h in source:
            history[h["BusinessEntityID"]].append(
                (h["StartDate"], h["EndDate"], h["TerritoryID"]))
    with read_table(data_dir, "SalesPerson") as source:
        current = {p["BusinessEntityID"]: p["TerritoryID"] for p in source}
    quotas: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    with read_table(data_dir, "SalesPersonQuotaHistory") as source:
        for q in source:
            person, date = q["BusinessEntityID"], q["QuotaDate"]
            timestamp(date)
            held = [t for start, end, t in history[person]
                    if start <= date and (not end or date <= end)]
            territory = held[0] if held else current.get(person, "")
            if territory:
                quotas[(territories[territory].division, int(date[:4]))] += Decimal(
                    q["SalesQuota"])
    return quotas
