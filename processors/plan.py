"""The config compiled once at start-up: per table, its formulas and its table shapes.

Building the plan is the full cross-check of a config folder: every formula and
every validation schema is compiled here, so ``assay check`` and every process
refuse a bad config before they touch a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.config import Config, ConfigError, TableConfig
from db import accounting, quarantine
from db.bronze import bronze_shape
from db.schema import TableShape
from db.silver import silver_shape
from processors.formulas import CompiledFormulas, FormulaConfigError, compile_formulas
from processors.normalise import RowCleaner
from processors.validation import CompiledValidator, SchemaError, compile_schema


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
class Plan:
    """The whole pipeline's compiled config."""

    config: Config
    tables: dict[str, TablePlan]

    @property
    def schema(self) -> str:
        return self.config.pipeline.db_schema

    def shapes(self) -> list[TableShape]:
        tables = self.tables.values()
        return [quarantine.SHAPE, accounting.SHAPE, *(t.bronze for t in tables),
                *(t.silver for t in tables)]


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
            except SchemaError as exc:
                problems.append(f"{where}: $.tables.{name}.validation: {exc}")
                continue
        tables[name] = TablePlan(
            name, table, formulas,
            bronze=bronze_shape(name, list(table.columns), derived),
            silver=silver_shape(name, {**table.columns, **derived}, table.key),
            cleaner=RowCleaner(table, derived),
            validator=validator,
        )
    if problems:
        raise ConfigError(problems)
    return Plan(config, tables)
