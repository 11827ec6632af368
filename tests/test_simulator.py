"""The AdventureWorks source simulator and the independent KPI reference.

Most tests share one Simulator over the shipped data (built once per module); the routing and
goal rules are also checked exactly on a tiny hand-written data set in the same file formats.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from assay.contracts.config import Config, load_config
from assay.demo import reference
from assay.demo.simulator import (
    DEFAULT_DATA_DIR,
    TABLES,
    Export,
    Simulator,
    SourceError,
    read_table,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
DIVISIONS = {"north_america": "North America", "europe": "Europe", "pacific": "Pacific"}
VALUE_RE = {
    "timestamp": re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"),
    "integer": re.compile(r"^-?\d+$"),
    "number": re.compile(r"^-?\d+(\.\d+)?$"),
}


@pytest.fixture(scope="module")
def simulator() -> Simulator:
    return Simulator(DEFAULT_DATA_DIR)


@pytest.fixture(scope="module")
def exports(simulator: Simulator) -> list[Export]:
    return list(simulator.exports())


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(CONFIG_DIR)


def rows_of(exports: list[Export], table: str) -> list[tuple[Export, dict]]:
    return [(e, row) for e in exports if e.table == table for row in e.rows]


def file_lines(name: str) -> list[str]:
    with gzip.open(DEFAULT_DATA_DIR / f"{name}.csv.gz", "rt", encoding="utf-8", newline="") as f:
        return f.read().splitlines()


def test_windows_are_every_month_of_the_orders_in_order(simulator: Simulator) -> None:
    windows = simulator.windows()
    assert windows[0] == "2011-05" and windows[-1] == "2014-06"
    assert len(windows) == 38
    assert windows == sorted(set(windows))
    assert simulator.divisions == DIVISIONS


def test_every_division_gets_every_table_every_window(
        simulator: Simulator, exports: list[Export], config: Config) -> None:
    windows = simulator.windows()
    assert len(exports) == len(TABLES) * len(DIVISIONS) * len(windows)
    assert {(e.window, e.division, e.table) for e in exports} == {
        (w, d, t) for w in windows for d in DIVISIONS for t in TABLES}
    assert [e.window for e in exports] == sorted(e.window for e in exports)
    for division in DIVISIONS:
        assert set(config.divisions[division].tables) == set(TABLES)


def test_rows_carry_exactly_the_config_columns_as_text(
        exports: list[Export], config: Config) -> None:
    for export in exports:
        columns = config.tables[export.table].columns
        for row in export.rows:
            assert list(row) == list(columns), export.table
            for name, kind in columns.items():
                value = row[name]
                assert value is None or isinstance(value, str)
                if value is not None and kind in VALUE_RE:
                    assert VALUE_RE[kind].match(value), (export.table, name, value)


def test_all_order_lines_are_sent_once(exports: list[Export]) -> None:
    lines = rows_of(exports, "erp_order_line")
    assert len(lines) == len(file_lines("SalesOrderDetail")) == 121_317
    assert len({row["SalesOrderDetailID"] for _, row in lines}) == 121_317
    assert len(rows_of(exports, "erp_order")) == len(file_lines("SalesOrderHeader")) - 1


def test_lines_follow_their_order(exports: list[Export]) -> None:
    orders = rows_of(exports, "erp_order")
    placed = {row["SalesOrderID"]: (e.window, e.division) for e, row in orders}
    for e, row in orders:
        assert str(row["OrderDate"])[:7] == e.window
    for e, line in rows_of(exports, "erp_order_line"):
        assert placed[line["SalesOrderID"]] == (e.window, e.division)


def test_each_customer_is_sent_once_with_its_first_order(
        simulator: Simulator, exports: list[Export]) -> None:
    first: dict[str, str] = {}
    for e, order in rows_of(exports, "erp_order"):
        first.setdefault(str(order["CustomerID"]), e.window)
    erp = {row["CustomerID"]: (e.window, e.division) for e, row in rows_of(exports, "erp_customer")}
    crm = {int(str(row["crm_id"]).removeprefix("CRM-")): (e.window, e.division)
           for e, row in rows_of(exports, "crm_account")}
    assert len(erp) == len(crm) == len(file_lines("Customer")) == 19_820
    for customer, (window, _) in erp.items():
        assert window == first.get(str(customer), simulator.windows()[0])
        assert crm[int(str(customer))] == erp[customer]


def test_crm_account_numbers_are_mangled_but_match_after_trim_and_lower(
        exports: list[Export]) -> None:
    erp = {int(str(r["CustomerID"])): str(r["AccountNumber"])
           for _, r in rows_of(exports, "erp_customer")}
    raw = {line.split("\t")[0]: line.split("\t")[4] for line in file_lines("Customer")}
    variants: Counter[str] = Counter()
    for _, row in rows_of(exports, "crm_account"):
        customer = int(str(row["crm_id"]).removeprefix("CRM-"))
        crm, account = str(row["account_number"]), erp[customer]
        assert account == raw[str(customer)] and re.match(r"^AW\d{8}$", account)
        assert crm.strip().lower() == account.lower()
        variants[("lower " if crm.strip() != account else "") + ("padded" if crm != crm.strip()
                                                                  else "")] += 1
    assert set(variants) == {"", "lower ", "padded", "lower padded"}
    assert variants[""] < 19_820 / 2


def test_crm_accounts_name_stores_and_people(exports: list[Export]) -> None:
    kinds: Counter[object] = Counter()
    for _, row in rows_of(exports, "crm_account"):
        kinds[row["kind"]] += 1
        if row["kind"] == "store":
            assert row["store_name"]
        else:
            assert row["store_name"] is None and row["first_name"] and row["last_name"]
    assert kinds == {"individual": 18_484, "store": 1_336}


def test_reference_tables_go_in_full_to_every_division_in_the_first_window(
        simulator: Simulator, exports: list[Export]) -> None:
    first = simulator.windows()[0]
    for table, count in (("erp_product", 504), ("erp_product_subcategory", 37),
                         ("erp_product_category", 4)):
        for e in exports:
            if e.table == table:
                assert len(e.rows) == (count if e.window == first else 0)


def test_product_codes_keep_their_padding(exports: list[Export]) -> None:
    products = [row for _, row in rows_of(exports, "erp_product")]
    assert {row["WeightUnitMeasureCode"] for row in products} == {None, "LB ", "G  "}
    assert all((row["Weight"] is None) == (row["WeightUnitMeasureCode"] is None)
               for row in products)


def test_goals_follow_the_rule_recomputed_independently(
        simulator: Simulator, exports: list[Export]) -> None:
    goals = {}
    for e, row in rows_of(exports, "sales_goal"):
        year = int(str(row["year"]))
        assert e.window == (simulator.windows()[0] if year == 2011 else f"{year}-01")
        assert row["division"] == DIVISIONS[e.division]
        assert row["set_at"] == f"{year}-01-01 00:00:00"
        goals[(row["division"], row["category"], year)] = int(str(row["goal_qty"]))
    assert len(goals) == 3 * 4 * 4
    assert goals == reference.goals(DEFAULT_DATA_DIR)


def test_reference_kpis_total_the_files_order_quantities() -> None:
    rows = reference.kpis(DEFAULT_DATA_DIR)
    assert [list(r) for r in rows[:1]] == [[
        "division", "category", "year", "shipped_qty", "shipped_tonnes", "annual_goal",
        "prior_year_shipped", "attainment_pct"]]
    assert rows == sorted(rows, key=lambda r: (r["division"], r["category"], r["year"]))
    total = sum(int(line.split(",")[3]) for line in file_lines("SalesOrderDetail"))
    assert sum(r["shipped_qty"] for r in rows) == total == 274_914
    assert {r["division"] for r in rows} == set(DIVISIONS.values())
    assert all(r["shipped_tonnes"].as_tuple().exponent == -3 for r in rows)


# A tiny AdventureWorks in the same formats, as plain .csv files.

def product(pid: str, name: str, unit: str, weight: str, subcategory: str) -> list[str]:
    row = [""] * 25
    row[0], row[1], row[2], row[12], row[13], row[18] = pid, name, f"P-{pid}", unit, weight, \
        subcategory
    row[24] = "2014-02-08 10:01:36.827000000"
    return row


def write_tiny(folder: Path) -> Path:
    folder.mkdir()
    tables = {
        "SalesTerritory": [["1", "Northwest", "US", "North America", "0", "0", "0", "0", "{g}",
                            "2008-04-30 00:00:00"],
                           ["7", "France", "FR", "Europe", "0", "0", "0", "0", "{g}",
                            "2008-04-30 00:00:00"]],
        "ProductCategory": [["1", "Bikes", "{g}", "2008-04-30 00:00:00"],
                            ["3", "Clothing", "{g}", "2008-04-30 00:00:00"]],
        "ProductSubcategory": [["2", "1", "Road Bikes", "{g}", "2008-04-30 00:00:00"],
                               ["19", "3", "Caps", "{g}", "2008-04-30 00:00:00"]],
        "Product": [product("10", "Road-1", "LB ", "20.00", "2"),
                    product("11", "Cap", "", "", "19"),
                    product("12", "Race", "", "", "")],
        "Customer": [["1", "", "100", "1", "AW00000001", "{g}", "2014-09-12 11:15:07.263000000"],
                     ["2", "200", "", "7", "AW00000002", "{g}", "2014-09-12 11:15:07.263000000"],
                     ["3", "201", "", "1", "AW00000003", "{g}", "2014-09-12 11:15:07.263000000"]],
        "Store": [["100", "Bike Shop", "300", '"<StoreSurvey a=""b""/>"', "g",
                   "2014-09-12 11:15:07.497000000"]],
        "SalesPerson": [["300", "1", "300000", "0", "0", "0", "0", "{g}", "2011-05-24 00:00:00"]],
        "SalesTerritoryHistory": [["300", "1", "2011-01-01 00:00:00", "", "{g}",
                                   "2011-05-24 00:00:00"]],
        "SalesPersonQuotaHistory": [["300", "2011-03-01 00:00:00", "1000", "{g}", "x"],
                                    ["300", "2012-03-01 00:00:00", "2000", "{g}", "x"]],
    }
    for name, rows in tables.items():
        (folder / f"{name}.csv").write_text("".join("\t".join(r) + "\n" for r in rows))
    header = ["SalesOrderID", "RevisionNumber", "OrderDate", "DueDate", "ShipDate", "Status",
              "CustomerID", "TerritoryID", "AccountNumber", "SubTotal", "TotalDue", "Comment",
              "ModifiedDate"]
    orders = [["1001", "8", "2011-01-15 00:00:00", "2011-01-27 00:00:00", "2011-01-20 00:00:00",
               "5", "1", "1", "10-4020-000001", "230.00", "250.00", "", "2011-01-20 00:00:00"],
              ["1002", "8", "2011-03-02 00:00:00", "2011-03-14 00:00:00", "2011-03-09 00:00:00",
               "5", "2", "7", "10-4030-000002", "50.00", "55.00", "", "2011-03-09 00:00:00"],
              ["1003", "8", "2012-02-10 00:00:00", "2012-02-22 00:00:00", "2012-02-15 00:00:00",
               "5", "1", "1", "10-4020-000001", "100.00", "110.00", "", "2012-02-15 00:00:00"]]
    lines = [header[:1] + ["    " + h for h in header[1:]], *orders]
    (folder / "SalesOrderHeader.csv").write_bytes(
        "".join("\t".join(r) + "\r\n" for r in lines).encode())
    details = [["1001", "1", "T-1", "2", "10", "1", "100.00", "0.00", "200.00", "ab",
                "2011-01-15T06:00:00.0000000Z"],
               ["1001", "2", "T-1", "3", "11", "1", "10.00", "0.00", "30.00", "cd",
                "2011-01-15T06:00:00.0000000Z"],
               ["1002", "3", "", "5", "11", "1", "10.00", "0.00", "50.00", "ef",
                "2011-03-02T06:00:00.0000000Z"],
               ["1003", "4", "", "1", "10", "1", "100.00", "0.00", "100.00", "gh",
                "2012-02-10T06:00:00.0000000Z"]]
    (folder / "SalesOrderDetail.csv").write_bytes(
        "".join(",".join(r) + "\r\n" for r in details).encode())
    person_header = ["BusinessEntityID", "PersonType", "NameStyle", "Title", "FirstName",
                     "MiddleName", "LastName", "Suffix", "EmailPromotion",
                     "AdditionalContactInfo", "Demographics", "rowguid", "ModifiedDate"]
    people = [["200", "IN", "0", "", "Ana", "", "López", "", "0", "<a>\r\nline</a>",
               "\ufeff<IndividualSurvey/>", "G1", "2009-01-07 00:00:00"],
              ["201", "IN", "0", "", "Bo", "", "Li", "", "0", "", "\ufeff<x/>", "G2",
               "2009-01-07 00:00:00"]]
    (folder / "Person.csv").write_bytes(("\ufeff" + "".join(
        "+|".join(r) + "&|\r\n" for r in [person_header, *people])).encode("utf-16-le"))
    return folder


def test_tiny_data_is_routed_by_the_rules(tmp_path: Path) -> None:
    sim = Simulator(write_tiny(tmp_path / "aw"))
    assert sim.divisions == {"north_america": "North America", "europe": "Europe"}
    assert sim.windows()[0] == "2011-01" and sim.windows()[-1] == "2012-02"
    sent: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for e in sim.exports():
        sent[(e.window, e.division, e.table)].extend(e.rows)
    assert [r["SalesOrderID"] for r in sent[("2011-01", "north_america", "erp_order")]] == ["1001"]
    assert [r["SalesOrderDetailID"] for r in sent[("2011-03", "europe", "erp_order_line")]] == ["3"]
    assert sent[("2011-01", "north_america", "erp_order_line")][0]["ModifiedDate"] == \
        "2011-01-15 06:00:00"
    assert {r["CustomerID"] for r in sent[("2011-01", "north_america", "erp_customer")]} == {
        "1", "3"}
    crm = {r["crm_id"]: r for r in sent[("2011-03", "europe", "crm_account")]}
    assert crm == {"CRM-00000002": {
        "crm_id": "CRM-00000002", "account_number": "  AW00000002 ", "kind": "individual",
        "store_name": None, "first_name": "Ana", "last_name": "López", "territory": "France",
        "modified_at": "2014-09-12 11:15:07"}}
    goals = {(r["category"], r["year"]): r["goal_qty"]
             for r in sent[("2012-01", "north_america", "sales_goal")]}
    # 2012 base is 2011: bikes 2, caps 3, revenue 230; quota 2000.
    assert goals == {("Bikes", "2012"): "17", ("Clothing", "2012"): "26"}
    first_goals = {r["category"]: r["goal_qty"]
                   for r in sent[("2011-01", "north_america", "sales_goal")]}
    # 2011 has no prior year: all years, bikes 3, caps 3, revenue 330; quota 1000.
    assert first_goals == {"Bikes": "9", "Clothing": "9"}
    assert {r["goal_qty"] for r in sent[("2011-01", "europe", "sales_goal")]} == {"0"}


def test_a_window_range_sends_what_fell_due_earlier_in_its_first_window(tmp_path: Path) -> None:
    sim = Simulator(write_tiny(tmp_path / "aw"), first="2011-03", last="2011-12")
    assert sim.windows() == [f"2011-{m:02d}" for m in range(3, 13)]
    sent: Counter[tuple[str, str]] = Counter()
    for e in sim.exports():
        sent[(e.window, e.table)] += len(e.rows)
    assert sent[("2011-03", "erp_product")] == 3 * 2
    assert sent[("2011-03", "erp_customer")] == 3
    assert sent[("2011-03", "erp_order")] == 1
    assert sent[("2011-03", "sales_goal")] == 2 * 2
    assert sum(n for (_, table), n in sent.items() if table == "erp_order_line") == 1


def test_reference_on_tiny_data(tmp_path: Path) -> None:
    rows = reference.kpis(write_tiny(tmp_path / "aw"))
    bikes = [r for r in rows if r["division"] == "North America" and r["category"] == "Bikes"]
    assert bikes == [
        {"division": "North America", "category": "Bikes", "year": 2011, "shipped_qty": 2,
         "shipped_tonnes": Decimal("0.018"), "annual_goal": 9, "prior_year_shipped": 0,
         "attainment_pct": Decimal("22.2")},
        {"division": "North America", "category": "Bikes", "year": 2012, "shipped_qty": 1,
         "shipped_tonnes": Decimal("0.009"), "annual_goal": 17, "prior_year_shipped": 2,
         "attainment_pct": Decimal("5.9")},
    ]
    europe = [r for r in rows if r["division"] == "Europe"]
    assert [(r["category"], r["shipped_qty"], r["attainment_pct"]) for r in europe] == [
        ("Clothing", 5, None)]


def test_plain_and_gzip_files_read_alike(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with gzip.open(DEFAULT_DATA_DIR / "ProductCategory.csv.gz") as f:
        (plain / "ProductCategory.csv").write_bytes(f.read())
    assert list(read_table(plain, "ProductCategory")) == list(
        read_table(DEFAULT_DATA_DIR, "ProductCategory"))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"SalesTerritory\.csv"):
        Simulator(tmp_path)


def test_a_bad_window_is_refused() -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        Simulator(DEFAULT_DATA_DIR, first="2012-13")


def test_malformed_and_repeated_lines_are_sent_on_and_left_out_of_goals(tmp_path: Path) -> None:
    clean = Simulator(write_tiny(tmp_path / "clean"))
    data = write_tiny(tmp_path / "perturbed")
    with (data / "SalesOrderDetail.csv").open("a", newline="") as f:
        f.write("1001,1,T-1,2,10,1,100.00,0.00,200.00,ab,2011-01-15T06:00:00.0000000Z\r\n"
                "1001,2,T-1,30,11,1,10.00,0.00,300.00,cd,2010-01-15T06:00:00.0000000Z\r\n"
                "1002,8,,many,11,1,10.00,0.00,50.00,ef,2011-03-02T06:00:00.0000000Z\r\n"
                "1003,9,,2.5,10,1,100.00,0.00,100.00,gh,2012-02-10T06:00:00.0000000Z\r\n")
    perturbed = Simulator(data)

    def goals(sim: Simulator) -> list[dict]:
        return [row for e in sim.exports() if e.table == "sales_goal" for row in e.rows]

    def lines(sim: Simulator) -> list[tuple[str, str, object]]:
        return [(e.window, str(row["SalesOrderDetailID"]), row["OrderQty"])
                for e in sim.exports() if e.table == "erp_order_line" for row in e.rows]

    assert goals(perturbed) == goals(clean)
    assert lines(perturbed) == [*lines(clean)[:2], ("2011-01", "1", "2"), ("2011-01", "2", "30"),
                                lines(clean)[2], ("2011-03", "8", "many"), lines(clean)[3],
                                ("2012-02", "9", "2.5")]
