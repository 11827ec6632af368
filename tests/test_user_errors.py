"""Every user-facing error is one clear line and a non-zero exit, never a traceback.

Each case runs the ``assay`` command as a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_simulator import write_tiny

ROOT = Path(__file__).resolve().parents[1]
CLOSED = "127.0.0.1:1"
"""Nothing listens on port 1: a connection is refused at once."""


def assay(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "ASSAY_CONNECT_ATTEMPTS": "1", "ASSAY_LOG_LEVEL": "INFO", **env}
    return subprocess.run([sys.executable, "-m", "assay", *map(str, args)], capture_output=True,
                          text=True, env=full, check=False, timeout=120)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a failed command (no traceback anywhere)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def config(tmp_path: Path, prefix: str) -> Path:
    """The demo's config in this test's own schema (never the shared default)."""
    folder = tmp_path / "config"
    folder.mkdir()
    for file in (ROOT / "config").glob("*.json"):
        data = json.loads(file.read_text())
        if "pipeline" in data:
            data["pipeline"]["db_schema"] = prefix
        (folder / file.name).write_text(json.dumps(data))
    return folder


@pytest.fixture
def urls(service_urls: tuple[str, str], prefix: str, tmp_path: Path) -> dict[str, str]:
    return {"REDIS_URL": service_urls[0], "DATABASE_URL": service_urls[1],
            "ASSAY_KEY_PREFIX": prefix, "ASSAY_DATA_DIR": str(tmp_path / "state")}


def test_an_empty_data_folder_names_the_missing_file(tmp_path: Path, config: Path,
                                                     urls: dict[str, str]) -> None:
    (tmp_path / "empty").mkdir()
    line = one_error(assay("demo", "--config", config, "--data", tmp_path / "empty", **urls))
    assert "SalesTerritory.csv.gz nor SalesTerritory.csv found" in line


def test_a_data_folder_missing_one_file_names_it(tmp_path: Path, config: Path,
                                                 urls: dict[str, str]) -> None:
    data = write_tiny(tmp_path / "aw")
    (data / "Store.csv").unlink()
    line = one_error(assay("demo", "--config", config, "--data", data, **urls))
    assert "neither Store.csv.gz nor Store.csv found" in line


def test_a_malformed_value_names_the_file_and_line(tmp_path: Path, config: Path,
                                                   urls: dict[str, str]) -> None:
    data = write_tiny(tmp_path / "aw")
    customers = (data / "Customer.csv").read_text().splitlines()
    customers[1] = customers[1].replace("2014-09-12 11:15:07.263000000", "last tuesday")
    (data / "Customer.csv").write_text("\n".join(customers) + "\n")
    line = one_error(assay("demo", "--config", config, "--data", data, **urls))
    assert line == (f"error: {data / 'Customer.csv'}: line 2: not a timestamp:"
                    " 'last tuesday'")


def test_a_short_row_names_the_file_and_line(tmp_path: Path, config: Path,
                                             urls: dict[str, str]) -> None:
    data = write_tiny(tmp_path / "aw")
    with (data / "SalesOrderDetail.csv").open("a") as f:
        f.write("1003,5,,1,10\r\n")
    line = one_error(assay("demo", "--config", config, "--data", data, **urls))
    assert line == (f"error: {data / 'SalesOrderDetail.csv'}: line 5: 5 fields, expected 11")


def test_a_file_that_is_not_gzip_is_named(tmp_path: Path, config: Path,
                                          urls: dict[str, str]) -> None:
    data = write_tiny(tmp_path / "aw")
    (data / "SalesTerritory.csv").unlink()
    (data / "SalesTerritory.csv.gz").write_bytes(b"not gzip at all")
    line = one_error(assay("demo", "--config", config, "--data", data, **urls))
    assert line.startswith(f"error: {data / 'SalesTerritory.csv.gz'}: unreadable: ")


def test_unreachable_redis_is_named_without_its_password(config: Path) -> None:
    line = one_error(assay("migrate", "--config", config,
                           REDIS_URL=f"redis://:s3cret@{CLOSED}/0",
                           DATABASE_URL=f"postgresql://postgres:s3cret@{CLOSED}/postgres"))
    assert line.startswith(f"error: cannot reach Redis at redis://:***@{CLOSED}/0: ")
    assert "s3cret" not in line


def test_unreachable_postgres_is_named_without_its_password(config: Path,
                                                            redis_url: str) -> None:
    result = assay("migrate", "--config", config, REDIS_URL=redis_url,
                   DATABASE_URL=f"postgresql://postgres:s3cret@{CLOSED}/postgres")
    line = one_error(result)
    assert line.startswith(f"error: cannot reach PostgreSQL at postgresql://postgres:***@{CLOSED}"
                           "/postgres: ")
    assert "s3cret" not in result.stderr


def test_an_unknown_postgres_role_is_named_without_its_password(config: Path,
                                                                  redis_url: str,
                                                                  database_url: str) -> None:
    host = database_url.split("@", 1)[1]
    result = assay("migrate", "--config", config, REDIS_URL=redis_url,
                   DATABASE_URL=f"postgresql://nobody_{config.parent.name[-8:]}:s3cret@{host}")
    line = one_error(result)
    assert line.startswith("error: PostgreSQL at postgresql://nobody_")
    assert ":***@" in line and "refused the connection" in line
    assert "s3cret" not in result.stderr


def test_a_config_error_names_file_and_path(tmp_path: Path, config: Path,
                                            urls: dict[str, str]) -> None:
    erp = json.loads((config / "erp.json").read_text())
    erp["tables"]["erp_order"]["formulas"]["ship_year"]["part"] = "yaer"
    (config / "erp.json").write_text(json.dumps(erp))
    for command in (["demo"], ["run", "bronze"], ["migrate"]):
        line = one_error(assay(*command, "--config", config, **urls))
        assert line.startswith(f"error: {config / 'erp.json'}: Invalid enum value 'yaer'")
        assert line.endswith("at `$.tables.erp_order.formulas.ship_year.part`")


def test_a_missing_config_folder_says_how_to_get_one(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "assay", "check"], capture_output=True,
                            text=True, cwd=tmp_path, check=False, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "ASSAY_CONFIG"})
    assert one_error(result) == ("error: config: no such file or folder (the config folder:"
                                 " --config DIR or ASSAY_CONFIG; `assay init DIR` writes one)")


def test_debug_adds_the_traceback(tmp_path: Path, config: Path, urls: dict[str, str]) -> None:
    (tmp_path / "empty").mkdir()
    result = assay("demo", "--config", config, "--data", tmp_path / "empty",
                   **{**urls, "ASSAY_LOG_LEVEL": "DEBUG"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "SourceError" in result.stderr


def test_a_bad_window_option_is_a_usage_error(tmp_path: Path) -> None:
    result = assay("demo", "--first", "2012-13")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Invalid value for '--first': a window is 'YYYY-MM', not '2012-13'" in result.stderr


@pytest.mark.parametrize(("spec", "says"), [
    ("silver", "expected NAME=N with N ≥ 1"),
    ("silver=0", "expected NAME=N with N ≥ 1"),
    ("platinum=2", "has no layer process named 'platinum'"),
])
def test_a_bad_concurrency_is_a_usage_error(spec: str, says: str) -> None:
    result = assay("demo", "-c", spec)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: --concurrency ") and says in line
