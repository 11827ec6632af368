"""The config compiled once at start-up: per table, its formulas and its table shapes.

Building the plan is the full cross-check of a config folder: every formula and
every validation schema is compiled here, so ``assay check`` and every process
refuse a bad config before they touch a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.config import Config, ConfigError, TableConfig
from db.bronze import bronze_shape
from db.schema import TableShape
from processors.formulas import CompiledFormulas, FormulaConfigError, compile_formulas


@dataclass(frozen=True)
class TablePlan:
    """Everything a layer needs to process one table, compiled."""

    name: str
    config: TableConfig
    formulas: CompiledFormulas
    bronze: TableShape

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
        from db import quarantine

        return [quarantine.SHAPE, *(t.bronze for t in self.tables.values())]


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
        shape = bronze_shape(name, list(table.columns), dict(formulas.output_types))
        tables[name] = TablePlan(name, table, formulas, shape)
    if problems:
        raise ConfigError(problems)
    return Plan(config, tables)
