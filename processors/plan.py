"""The config compiled once at start-up: per table, its formulas and its table shapes.

Building the plan is the full cross-check of a config folder: every formula and
every validation schema is compiled here, so ``assay check`` and every process
refuse a bad config before they touch a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from assay.contracts.config import Config, ConfigError, TableConfig
from assay.db import accounting, quarantine
from assay.db.bronze import bronze_shape
from assay.db.gold import (
    APPLIED,
    AccountLookup,
    AccountMoves,
    LinkTarget,
    TableSync,
    WindowKeys,
    gold_shape,
    unmatched_view,
)
from assay.db.kpi import KpiSql, Source, kpi_indexes, kpi_shape, sums_shape
from assay.db.schema import TableShape, View
from assay.db.silver import silver_shape
from assay.processors.cleaning import RowCleaner
from assay.processors.formulas import CompiledFormulas, FormulaConfigError, compile_formulas
from assay.processors.validation import (
    AssayValidator,
    CompiledValidator,
    SchemaError,
    compile_schema,
)


@dataclass(frozen=True)
class TablePlan:
    """Everything a layer needs to process one table, compiled."""

    name: str
    config: TableConfig
    formulas: CompiledFormulas
    bronze: TableShape
    silver: TableShape
    cleaner: RowCleaner
    validator: CompiledValidator | None

    @property
    def derived_types(self) -> dict[str, str]:
        return dict(self.formulas.output_types)


@dataclass(frozen=True)
class GoldPlan:
    """Gold's statements, built once: table syncs, account links, KPIs."""

    shapes: list[TableShape]
    views: list[View]
    syncs: list[TableSync]
    links: list[LinkTarget]
    moves: AccountMoves | None
    keys: WindowKeys | None
    kpis: list[KpiSql]
    work_mem: str


@dataclass(frozen=True)
class Plan:
    """The whole pipeline's compiled config."""

    config: Config
    tables: dict[str, TablePlan]
    gold: GoldPlan

    @property
    def snapshot_tables(self) -> list[str]:
        return [n for n, t in self.tables.items() if t.config.mode == "snapshot"]

    @property
    def schema(self) -> str:
        return self.config.pipeline.db_schema

    def shapes(self) -> list[TableShape]:
        tables = self.tables.values()
        return [quarantine.SHAPE, accounting.SHAPE, *(t.bronze for t in tables),
                *(t.silver for t in tables), *self.gold.shapes]

    def views(self) -> list[View]:
        return [accounting.view(self.schema), *self.gold.views]


def build_plan(config: Config) -> Plan:
    """Compile every table; raise ConfigError naming file and path of each problem."""
    problems: list[str] = []
    tables: dict[str, TablePlan] = {}
    for name, table in config.tables.items():
        where = config.sources.get(f"table:{name}", "?")
        try:
            formulas = compile_formulas(name, dict(table.columns), table.formulas)
        except FormulaConfigError as exc:
            problems.append(f"{where}: $.tables.{name}.formulas: {exc}")
            continue
        derived = dict(formulas.output_types)
        validator = None
        if table.validation:
            try:
                validator = compile_schema(table.validation, table=name)
                if config.pipeline.validation == "cerberus":
                    validator = CompiledValidator(name, AssayValidator(dict(table.validation)),
                                                  None)
            except SchemaError as exc:
                problems.append(f"{where}: $.tables.{name}.validation: {exc}")
                continue
        tables[name] = TablePlan(
            name, table, formulas,
            bronze=bronze_shape(name, list(table.columns), derived),
            silver=silver_shape(name, {**table.columns, **derived}, table.key,
                                table.per_division),
            cleaner=RowCleaner(table, derived),
            validator=validator,
        )
    if problems:
        raise ConfigError(problems)
    return Plan(config, tables, build_gold(config, tables))


def build_gold(config: Config, tables: dict[str, TablePlan]) -> GoldPlan:
    """Gold shapes and statements from the (already cross-checked) gold config.

    The accounts table syncs first, so the rows of a window find the accounts the
    same window brought.
    """
    gold, schema = config.gold, config.pipeline.db_schema
    link = gold.linkage
    lookup = None if link is None else AccountLookup(
        link.accounts.table, link.accounts.id, link.accounts.key, link.link_column)
    shapes: list[TableShape] = [APPLIED]
    syncs: list[TableSync] = []
    types: dict[str, dict[str, str]] = {}
    first = [] if link is None else [link.accounts.table]
    sources: dict[str, Source] = {}
    for name, table in gold.tables.items():
        by_silver = {s: g for g, s in table.columns.items()}
        sources[name] = Source(table.source, {by_silver[k]: k
                                              for k in tables[table.source].config.key})
    extra: dict[str, list[list[str]]] = {}
    for kpi in gold.kpis.values():
        for name, wanted in kpi_indexes(kpi, {n: list(s.key) for n, s in sources.items()}
                                        ).items():
            extra.setdefault(name, []).extend(wanted)
    for name in sorted(gold.tables, key=lambda n: n not in first):
        table = gold.tables[name]
        source = tables[table.source]
        columns = {g: source.silver.columns[s] for g, s in table.columns.items()}
        key = list(sources[name].key)
        indexes = list(table.indexes)
        indexes += [i for i in extra.get(name, []) if i not in indexes]
        account_key = target_key = None
        if link is not None:
            target_key = link.targets.get(name)
            account_key = target_key or (link.accounts.key if name in first else None)
        link_column = None
        if link is not None and target_key:
            link_column = (link.link_column, types[link.accounts.table][link.accounts.id])
        shape = gold_shape(name, columns, key, indexes, link_column, account_key,
                           link.accounts.id if link is not None and name in first else None)
        shapes.append(shape)
        types[name] = dict(shape.columns)
        syncs.append(TableSync.build(schema, name, table.source, table.columns, key,
                                     lookup if target_key else None, target_key))
    links: list[LinkTarget] = []
    views: list[View] = []
    moves = keys = None
    if link is not None and lookup is not None:
        keys = WindowKeys.build(schema, lookup, types[link.accounts.table][link.accounts.id])
        views.append(unmatched_view(schema, link.link_column, link.targets))
        links = [LinkTarget.build(schema, lookup, t, k) for t, k in link.targets.items()]
        accounts = gold.tables[link.accounts.table]
        moves = AccountMoves.build(schema, lookup, accounts.source,
                                   accounts.columns[link.accounts.id],
                                   accounts.columns[link.accounts.key], link.targets)
    kpis: list[KpiSql] = []
    for name, kpi in gold.kpis.items():
        dimension_types = {}
        for dimension, ref in kpi.dimensions.items():
            table_name, _, column = ref.partition(".")
            dimension_types[dimension] = types[table_name][column]
        shapes.append(kpi_shape(name, kpi, dimension_types))
        shapes.append(sums_shape(name, kpi, dimension_types))
        kpis.append(KpiSql.build(schema, name, kpi, dimension_types, sources))
    return GoldPlan(shapes, views, syncs, links, moves, keys, kpis, gold.work_mem)
