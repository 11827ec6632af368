"""The pipeline configuration: JSON files decoded once into frozen Structs.

A config folder holds one or more ``*.json`` files. Each file may carry any of the
sections ``pipeline``, ``divisions`` and ``tables``; the files are merged, and a name
defined twice is an error naming both files. Unknown keys are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import msgspec

from assay.contracts.formulas import Formula
from assay.contracts.gold import GoldConfig
from assay.contracts.messages import MAX_ROW, RowNumber
from assay.contracts.ops import AlertsConfig, NotificationsConfig

ColumnType = Literal["text", "integer", "number", "date", "timestamp", "boolean"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
"""Division and table names: lower-case identifiers, safe in SQL, stream keys and hash tags."""

COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
WORK_MEM_RE = re.compile(r"^[1-9][0-9]{0,6}(kB|MB|GB)$")
KPI_RESERVED = {"division", "period", "parts", "qty", "weight", "goal", "shipped_qty",
                "shipped_weight", "annual_goal", "period_goal", "prior_year_goal",
                "prior_year_shipped", "attainment_pct", "prior_year_attainment_pct"}
"""Names of the KPI table's own columns, and of the KPI statement's working columns."""
"""Column names: source spellings such as ``SalesOrderID`` are kept, always quoted in SQL."""


class ConfigError(ValueError):
    """A config problem, with the file and the JSON path it was found at."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for config Structs: immutable, unknown keys refused."""


class PipelineConfig(Strict, frozen=True):
    """Runtime settings shared by every layer."""

    environment: str = "DEV"
    db_schema: str = "assay"
    batch_size: int = 500
    block_ms: int = 1000
    max_deliveries: int = 3
    claim_idle_ms: int = 60_000
    max_payload_bytes: int = 1_000_000
    max_backlog_entries: int = 100
    """Backpressure: a writer waits while the readers of a stream are this many entries behind."""
    validation: Literal["compiled", "cerberus"] = "compiled"
    """``cerberus`` validates every record with Cerberus itself (slow; for comparison)."""
    trim_every: int = 20
    max_row: RowNumber = MAX_ROW
    """The highest row number a window's table may have (at most 2^32-1, what a Redis bitmap
    addresses). The barrier keeps a bitmap per division, window, table and outcome whose size
    follows the highest row accounted: a row near 2^32 costs 512 MB of Redis memory, so a
    lower bound here caps what one hostile record can make Redis allocate. A record or
    table_end beyond it is dead-lettered at Bronze's door."""


class DivisionConfig(Strict, frozen=True):
    """A division: the tables each of its sync windows must contain, and its timeouts."""

    name: str
    tables: list[str]
    window_timeout_s: float = 900.0
    retries: int = 3
    retry_interval_s: float = 60.0
    on_timeout: Literal["hold", "complete_partial"] = "hold"


class Normalise(Strict, frozen=True):
    """How Silver cleans one column before validation."""

    trim: bool = True
    collapse_whitespace: bool = False
    case: Literal["upper", "lower"] | None = None
    empty_to_null: bool = True
    default: str | None = None


class TableConfig(Strict, frozen=True):
    """One source table: its raw columns, key, formulas, cleaning and validation."""

    columns: dict[str, ColumnType]
    key: list[str]
    source: str = ""
    sequence: str | None = None
    mode: Literal["delta", "snapshot"] = "delta"
    per_division: bool = False
    """Every division sends its own copy (reference data): Silver keeps one row per division
    and key, so each division's windows bring it to Gold themselves."""
    timezone: str = "UTC"
    timestamp_formats: list[str] = msgspec.field(
        default_factory=lambda: ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"])
    date_formats: list[str] = msgspec.field(default_factory=lambda: ["%Y-%m-%d"])
    formulas: dict[str, Formula] = {}
    normalise: dict[str, Normalise] = {}
    validation: dict[str, Any] = {}
    """Cerberus rules for the fields they name (after normalisation and typing)."""


Scope = Literal["ingest", "read", "replay"]

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class HttpToken(Strict, frozen=True):
    """A bearer token of the HTTP API, known only by its SHA-256 hash (hex).

    ``divisions`` lists the divisions it may touch (``["*"]``: all); ``scopes`` what it may
    do: ``ingest`` (POST records), ``read`` (status and read endpoints), ``replay``.
    """

    name: str
    sha256: str
    divisions: list[str]
    scopes: list[Scope]


class HttpConfig(Strict, frozen=True):
    """``assay serve``: its tokens and request limits. There is no switch that turns
    authentication off: with no tokens, every request but the health checks gets 401."""

    tokens: list[HttpToken] = []
    max_body_bytes: int = 256 * 1024 * 1024
    """Past this many bytes (after gzip) a request gets 413."""
    max_json_array_bytes: int = 32 * 1024 * 1024
    """``application/json`` arrays are decoded whole up to this size; send larger tables as
    NDJSON or CSV, which are streamed."""
    max_header_bytes: int = 16 * 1024
    idempotency_ttl_s: int = 86_400
    backlog_wait_s: float = 5.0
    """While Bronze is more than ``max_backlog_entries`` behind, a POST waits up to this long
    for room (as the Python producer does), then gets 429 with ``Retry-After``."""


class ConfigFile(Strict, frozen=True):
    """What one JSON file of the config folder may contain."""

    pipeline: PipelineConfig | None = None
    divisions: dict[str, DivisionConfig] = {}
    tables: dict[str, TableConfig] = {}
    gold: GoldConfig | None = None
    notifications: NotificationsConfig | None = None
    alerts: AlertsConfig | None = None
    http: HttpConfig | None = None


class Config(Strict, frozen=True):
    """The merged, cross-checked pipeline config."""

    pipeline: PipelineConfig
    divisions: dict[str, DivisionConfig]
    tables: dict[str, TableConfig]
    gold: GoldConfig = GoldConfig()
    notifications: NotificationsConfig = msgspec.field(default_factory=NotificationsConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    http: HttpConfig = HttpConfig()
    sources: dict[str, str] = {}
    """Which file defined each division and table (``table:NAME`` / ``division:NAME``)."""


_sections_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])

SINGLE_SECTIONS: dict[str, type[Any]] = {
    "pipeline": PipelineConfig, "gold": GoldConfig, "notifications": NotificationsConfig,
    "alerts": AlertsConfig, "http": HttpConfig,
}
"""Sections that one file defines whole (the others merge by name)."""
SECTIONS = ("pipeline", "divisions", "tables", "gold", "notifications", "alerts", "http")


def _at(exc: msgspec.ValidationError, path: str) -> str:
    """msgspec's message with its JSON path made absolute from ``path``."""
    message = str(exc)
    if " - at `$" in message:
        return message.replace(" - at `$", f" - at `{path}", 1)
    return f"{message} - at `{path}`"


def _decode(raw: msgspec.Raw, kind: type[Any], path: str) -> Any:
    """Decode one part; on error, narrow dict members down to the one that failed."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        if "[...]" in str(exc):
            narrowed = _narrow(raw, kind, path)
            if narrowed:
                raise ConfigError([narrowed]) from exc
        raise ConfigError([_at(exc, path)]) from exc


def _narrow(raw: msgspec.Raw, kind: type[Any], path: str) -> str | None:
    """Find which member of a dict-valued field failed, for a precise path."""
    try:
        fields = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    except msgspec.ValidationError:
        return None
    hints = {f.encode_name: f.type for f in msgspec.structs.fields(kind)} if isinstance(
        kind, type) and issubclass(kind, msgspec.Struct) else {}
    for name, value in fields.items():
        member = hints.get(name)
        if getattr(member, "__origin__", None) is dict:
            inner = member.__args__[1]  # type: ignore[union-attr]
            try:
                members = msgspec.json.decode(value, type=dict[str, msgspec.Raw])
            except msgspec.ValidationError:
                continue
            for key, item in members.items():
                try:
                    _decode(item, inner, f"{path}.{name}.{key}")
                except ConfigError as exc:
                    return exc.problems[0]
    return None


def _decode_file(data: bytes) -> ConfigFile:
    try:
        sections = _sections_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ConfigError([_at(exc, "$")]) from exc
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError([f"unknown section {unknown[0]!r} (expected {', '.join(SECTIONS)})"
                           f" - at `$.{unknown[0]}`"])
    problems: list[str] = []
    parts: dict[str, Any] = {}
    for section, single in SINGLE_SECTIONS.items():
        if section in sections:
            try:
                parts[section] = _decode(sections[section], single, f"$.{section}")
            except ConfigError as exc:
                problems.extend(exc.problems)
    for section, kind in (("divisions", DivisionConfig), ("tables", TableConfig)):
        if section not in sections:
            continue
        try:
            members = msgspec.json.decode(sections[section], type=dict[str, msgspec.Raw])
        except msgspec.ValidationError as exc:
            problems.append(_at(exc, f"$.{section}"))
            continue
        decoded = {}
        for key, raw in members.items():
            try:
                decoded[key] = _decode(raw, kind, f"$.{section}.{key}")
            except ConfigError as exc:
                problems.extend(exc.problems)
        parts[section] = decoded
    if problems:
        raise ConfigError(problems)
    return ConfigFile(**parts)


def load_config(path: Path | str) -> Config:
    """Decode and cross-check a config folder (or a single file); raise ConfigError."""
    root = Path(path)
    files = sorted(root.rglob("*.json")) if root.is_dir() else [root]
    if not files:
        raise ConfigError([f"{root}: no .json config files found"])
    problems: list[str] = []
    pipeline: PipelineConfig | None = None
    pipeline_file = ""
    singles: dict[str, Any] = {}
    divisions: dict[str, DivisionConfig] = {}
    tables: dict[str, TableConfig] = {}
    sources: dict[str, str] = {}
    for file in files:
        name = str(file)
        try:
            part = _decode_file(file.read_bytes())
        except ConfigError as exc:
            problems.extend(f"{name}: {p}" for p in exc.problems)
            continue
        except msgspec.DecodeError as exc:
            problems.append(f"{name}: not valid JSON: {exc}")
            continue
        if part.pipeline is not None:
            if pipeline is not None:
                problems.append(f"{name}: $.pipeline is already defined in {pipeline_file}")
            pipeline, pipeline_file = part.pipeline, name
        for section in ("gold", "notifications", "alerts", "http"):
            value = getattr(part, section)
            if value is None:
                continue
            if section in singles:
                problems.append(f"{name}: $.{section} is already defined in {sources[section]}")
            singles[section], sources[section] = value, name
        for kind, items in (("division", part.divisions), ("table", part.tables)):
            for key in items:
                where = f"{kind}:{key}"
                if where in sources:
                    problems.append(
                        f"{name}: $.{kind}s.{key} is already defined in {sources[where]}"
                    )
                    continue
                sources[where] = name
        divisions.update({k: v for k, v in part.divisions.items() if k not in divisions})
        tables.update({k: v for k, v in part.tables.items() if k not in tables})
    if problems:
        raise ConfigError(problems)
    config = Config(
        pipeline=pipeline or PipelineConfig(),
        divisions=divisions,
        tables=tables,
        **singles,
        sources=sources,
    )
    problems = cross_check(config)
    if problems:
        raise ConfigError(problems)
    return config


def cross_check(config: Config) -> list[str]:
    """Every reference between parts of the config must resolve; returns the problems."""
    problems: list[str] = []
    src = config.sources
    if not NAME_RE.match(config.pipeline.db_schema):
        problems.append(f"$.pipeline.db_schema: {config.pipeline.db_schema!r} is not a valid name")
    for name, division in config.divisions.items():
        where = f"{src.get('division:' + name, '?')}: $.divisions.{name}"
        if not NAME_RE.match(name):
            problems.append(f"{where}: division name must match {NAME_RE.pattern}")
        if not division.tables:
            problems.append(f"{where}.tables: a division needs at least one table")
        for i, table_name in enumerate(division.tables):
            if table_name not in config.tables:
                problems.append(f"{where}.tables[{i}]: table {table_name!r} is not defined")
    for name, table in config.tables.items():
        where = f"{src.get('table:' + name, '?')}: $.tables.{name}"
        problems.extend(_check_table(where, name, table))
    problems.extend(_check_gold(f"{src.get('gold', '?')}: $.gold", config))
    problems.extend(_check_http(f"{src.get('http', '?')}: $.http", config))
    return problems


def _check_http(where: str, config: Config) -> list[str]:
    """Token hashes look like SHA-256 hex, names are unique, divisions exist."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, token in enumerate(config.http.tokens):
        at = f"{where}.tokens[{i}]"
        if not SHA256_RE.match(token.sha256):
            problems.append(f"{at}.sha256: not a SHA-256 hex digest (64 lower-case hex digits;"
                            " put the token's hash here, never the token)")
        if token.sha256 in seen:
            problems.append(f"{at}.sha256: the same token is configured twice")
        seen.add(token.sha256)
        if not token.scopes:
            problems.append(f"{at}.scopes: a token needs at least one scope")
        for j, division in enumerate(token.divisions):
            if division != "*" and division not in config.divisions:
                problems.append(f"{at}.divisions[{j}]: division {division!r} is not defined")
    return problems


def _check_gold(where: str, config: Config) -> list[str]:
    """Gold mappings, linkage and KPIs must name existing tables and columns."""
    problems: list[str] = []
    gold = config.gold
    columns: dict[str, set[str]] = {}
    for name, table in gold.tables.items():
        at = f"{where}.tables.{name}"
        if not NAME_RE.match(name):
            problems.append(f"{at}: table name must match {NAME_RE.pattern}")
        source = config.tables.get(table.source)
        if source is None:
            problems.append(f"{at}.source: Silver table {table.source!r} is not defined")
            continue
        fields = set(source.columns) | set(source.formulas)
        for gold_column, silver_column in table.columns.items():
            if not COLUMN_RE.match(gold_column) or gold_column.startswith("_"):
                problems.append(f"{at}.columns.{gold_column}: not a valid column name")
            if silver_column not in fields:
                problems.append(f"{at}.columns.{gold_column}: {silver_column!r} is not a column"
                                f" of {table.source!r}")
        mapped = set(table.columns.values())
        for key in source.key:
            if key not in mapped:
                problems.append(f"{at}.columns: the key column {key!r} of {table.source!r}"
                                " must be mapped")
        columns[name] = set(table.columns) | {"_division", "_window"}
        for i, index in enumerate(table.indexes):
            for column in index:
                if column not in columns[name]:
                    problems.append(f"{at}.indexes[{i}]: {column!r} is not a Gold column")
    link = gold.linkage
    if link is not None:
        at = f"{where}.linkage"
        for table_name, column in [(link.accounts.table, link.accounts.id),
                                   (link.accounts.table, link.accounts.key),
                                   *link.targets.items()]:
            if column not in columns.get(table_name, set()):
                problems.append(f"{at}: {table_name}.{column} is not a Gold column")
        if link.accounts.table in link.targets:
            problems.append(f"{at}.targets.{link.accounts.table}: the accounts table cannot"
                            " also be a target")
        for table_name in link.targets:
            if link.link_column in columns.get(table_name, set()):
                problems.append(f"{at}.link_column: {table_name}.{link.link_column} is already"
                                " a mapped column")
            columns.setdefault(table_name, set()).add(link.link_column)
    for name, kpi in gold.kpis.items():
        at = f"{where}.kpis.{name}"
        refs = [("facts", f"{kpi.facts}.{kpi.quantity}"), ("year", kpi.dimensions.get(kpi.year,
                "?.?"))]
        if kpi.weight:
            refs.append(("weight", kpi.weight))
        if kpi.period_date:
            refs.append(("period_date", kpi.period_date))
        refs += [(f"dimensions.{d}", ref) for d, ref in kpi.dimensions.items()]
        for j, join in enumerate(kpi.joins):
            refs += [(f"joins[{j}].on.{c}", f"{join.table}.{c}") for c in join.on]
            refs += [(f"joins[{j}].on.{c}", ref) for c, ref in join.on.items()]
        refs += [("goals.value", f"{kpi.goals.table}.{kpi.goals.value}"),
                 ("goals.division", f"{kpi.goals.table}.{kpi.goals.division}")]
        refs += [(f"goals.match.{d}", f"{kpi.goals.table}.{c}") for d, c in
                 kpi.goals.match.items()]
        for path, ref in refs:
            table_name, _, column = ref.partition(".")
            if column not in columns.get(table_name, set()):
                problems.append(f"{at}.{path}: {ref!r} is not a Gold table.column")
            elif link and table_name in link.targets and column == link.link_column:
                # KPIs follow the rows a window writes; linkage rewrites links elsewhere.
                problems.append(f"{at}.{path}: {ref!r} is the link column, which KPIs"
                                " cannot use")
        if kpi.year not in kpi.dimensions:
            problems.append(f"{at}.year: {kpi.year!r} is not one of the dimensions")
        if set(kpi.goals.match) != set(kpi.dimensions):
            problems.append(f"{at}.goals.match: must name exactly the dimensions"
                            f" {sorted(kpi.dimensions)}")
        if kpi.periods and not kpi.period_date:
            problems.append(f"{at}.period_date: needed for periods {kpi.periods}")
        for dimension in kpi.dimensions:
            if dimension in KPI_RESERVED or not COLUMN_RE.match(dimension) or \
                    dimension.startswith("_"):
                problems.append(f"{at}.dimensions.{dimension}: not a usable dimension name"
                                f" (not {sorted(KPI_RESERVED)}, no leading '_')")
    if not WORK_MEM_RE.match(gold.work_mem):
        problems.append(f"{where}.work_mem: {gold.work_mem!r} is not like '64MB'"
                        " (a number with kB, MB or GB)")
    return problems


def _check_table(where: str, name: str, table: TableConfig) -> list[str]:
    problems: list[str] = []
    if not NAME_RE.match(name):
        problems.append(f"{where}: table name must match {NAME_RE.pattern}")
    for column in table.columns:
        if not COLUMN_RE.match(column) or column.startswith("_"):
            problems.append(
                f"{where}.columns.{column}: column names must match {COLUMN_RE.pattern}"
                " and not start with '_'"
            )
    fields = set(table.columns) | set(table.formulas)
    for output in table.formulas:
        if output in table.columns:
            problems.append(f"{where}.formulas.{output}: the name is already a column")
        elif not COLUMN_RE.match(output) or output.startswith("_"):
            problems.append(f"{where}.formulas.{output}: not a valid column name")
    if not table.key:
        problems.append(f"{where}.key: a table needs a key")
    for i, column in enumerate(table.key):
        if column not in fields:
            problems.append(f"{where}.key[{i}]: {column!r} is not a column of the table")
    if table.sequence is not None and table.sequence not in fields:
        problems.append(f"{where}.sequence: {table.sequence!r} is not a column of the table")
    for column in table.normalise:
        if column not in fields:
            problems.append(f"{where}.normalise.{column}: not a column of the table")
    for column in table.validation:
        if column not in fields:
            problems.append(f"{where}.validation.{column}: not a column of the table")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(table.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}.timezone: unknown time zone {table.timezone!r}")
    return problems


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of one config file, generated from the Structs, for editors."""
    return msgspec.json.schema(ConfigFile)
