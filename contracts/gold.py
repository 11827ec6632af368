"""Gold config: table mappings from Silver, CRM↔ERP account linkage, and KPI definitions.

Column references in joins and dimensions are ``"table.column"`` with Gold table names.
These types only describe the config; ``processors.gold`` checks and runs them.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base: immutable, unknown keys refused."""


class GoldTable(_Strict, frozen=True, kw_only=True):
    """A Gold table fed from one Silver table: Gold column name → Silver column."""

    source: str
    columns: dict[str, str]
    indexes: list[list[str]] = []
    """Extra b-tree indexes, each a list of Gold columns (join keys of the KPIs)."""


class LinkSide(_Strict, frozen=True, kw_only=True):
    """Where CRM accounts are: a Gold table, its id column and its account-number column."""

    table: str
    id: str
    key: str


class Linkage(_Strict, frozen=True, kw_only=True):
    """Link CRM account ids onto ERP rows whose account numbers match after trim(lower())."""

    accounts: LinkSide
    targets: dict[str, str]
    """Gold table → its column holding the (differently formatted) account number."""
    link_column: str = "crm_account_id"


class Join(_Strict, frozen=True, kw_only=True):
    """Join a Gold table: ``on`` maps its columns to ``table.column`` references."""

    table: str
    on: dict[str, str]


class Goals(_Strict, frozen=True, kw_only=True):
    """The goals table: its value column, its division column, and how its rows match."""

    table: str
    value: str
    division: str
    """A column holding the division's display name or id."""
    match: dict[str, str]
    """KPI dimension name → goals column (the year dimension must be among them)."""


class Kpi(_Strict, frozen=True, kw_only=True):
    """Shipped quantity and weight against annual and prior-year goals.

    Facts are rows of ``facts`` (joined as configured), summed by division and the
    ``dimensions``; ``year`` names the dimension holding the year, so the prior year
    and attainment can be computed; ``periods`` add rows per quarter or month with the
    annual goal spread evenly.
    """

    facts: str
    quantity: str
    weight: str | None = None
    """``table.column`` with the weight per unit (summed as quantity × weight)."""
    joins: list[Join] = []
    dimensions: dict[str, str]
    year: str
    period_date: str | None = None
    """``table.column`` with the date that places a fact in a quarter or month."""
    periods: list[Literal["quarter", "month"]] = []
    goals: Goals


class GoldConfig(_Strict, frozen=True, kw_only=True):
    """The whole Gold section of the config."""

    tables: dict[str, GoldTable] = {}
    linkage: Linkage | None = None
    kpis: dict[str, Kpi] = {}
    work_mem: str = "64MB"
    """PostgreSQL ``work_mem`` for Gold's transaction: room for a window's hash joins and
    sorts in memory (a number with ``kB``, ``MB`` or ``GB``)."""
