"""Silver validation throughput: Cerberus against the compiled validator, one process.

    python bench/validation.py [--records N] [--seconds S] [--runs 3]

Validates generated order records (mostly valid, some not) against a realistic 15-field
schema and prints a markdown table of records per second, measured on process CPU time
(one core) and on the wall clock, with the machine's load average. Each run is stored in
bench/results/ (``bench.runs``) as part ``validation``, and the README's figures are
regenerated from there.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assay.processors.validation import AssayValidator, compile_schema
from bench import readme
from bench.runs import RESULTS, ROOT, repeat

SCHEMA: dict[str, Any] = {
    "order_id": {"type": "integer", "coerce": "integer", "required": True, "min": 1},
    "line_no": {"type": "integer", "coerce": "integer", "min": 1, "max": 999},
    "sku": {"type": "string", "coerce": "strip", "required": True, "regex": r"[A-Z]{3}-\d{4}"},
    "customer_email": {
        "type": "string", "coerce": ["strip", "lower"], "maxlength": 254,
        "regex": r"[^@\s]+@[^@\s]+\.[a-z]{2,}",
    },
    "quantity": {"type": "integer", "coerce": "integer", "required": True, "min": 1, "max": 10_000},
    "unit_price": {"type": "decimal", "coerce": "decimal", "required": True, "min": 0},
    "currency": {
        "type": "string", "coerce": "upper", "required": True,
        "allowed": ["EUR", "USD", "GBP", "CHF"],
    },
    "discount": {"type": "float", "coerce": "float", "min": 0.0, "max": 1.0, "default": 0.0},
    "ordered_at": {"type": "datetime", "coerce": "datetime", "required": True},
    "ship_date": {"type": "date", "coerce": ["nullify_empty", "date"], "nullable": True},
    "country": {"type": "string", "coerce": "upper", "minlength": 2, "maxlength": 2,
                "regex": "[A-Z]{2}"},
    "status": {"type": "string", "allowed": ["new", "paid", "shipped", "cancelled"],
               "default": "new"},
    "is_gift": {"type": "boolean", "coerce": "boolean", "default": False},
    "channel": {"type": "string", "required": True, "allowed": ["web", "store", "phone"]},
    "notes": {"type": "string", "nullable": True, "empty": True, "maxlength": 500},
}
"""An order line as a CSV-like source sends it: mostly strings, coerced on the way in."""

TYPED_SCHEMA: dict[str, Any] = {
    field: {rule: value for rule, value in rules.items() if rule not in ("coerce", "default")}
    for field, rules in SCHEMA.items()
}
"""The same checks without normalisation, for records that arrive already typed."""

_BREAKAGES: list[tuple[str, Any]] = [
    ("quantity", "0"), ("quantity", "lots"), ("currency", "YEN"), ("sku", "abc-12"),
    ("ordered_at", "yesterday"), ("unit_price", "-3.10"), ("discount", "1.5"),
    ("country", "FRA"), ("channel", "fax"), ("sku", None), ("is_gift", "maybe"),
]


def make_records(count: int, seed: int = 7, invalid_share: float = 0.1) -> list[dict[str, Any]]:
    """Order lines with string values; about ``invalid_share`` of them break one rule."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        record = {
            "order_id": str(100_000 + n),
            "line_no": str(rng.randint(1, 20)),
            "sku": f"{rng.choice(['ABC', 'XYZ', 'QRS'])}-{rng.randint(0, 9999):04d}",
            "customer_email": f" Customer{rng.randint(1, 999)}@Example.com ",
            "quantity": str(rng.randint(1, 50)),
            "unit_price": f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}",
            "currency": rng.choice(["eur", "usd", "gbp", "chf"]),
            "ordered_at": f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
                          f"T1{rng.randint(0, 9)}:30:00",
            "ship_date": rng.choice(["", f"2024-10-0{rng.randint(1, 9)}"]),
            "country": rng.choice(["fr", "de", "us", "gb"]),
            "channel": rng.choice(["web", "store", "phone"]),
            "notes": rng.choice(["", "leave at the door", None]),
        }
        if rng.random() < 0.5:
            record["discount"] = f"0.{rng.randint(0, 30):02d}"
            record["is_gift"] = rng.choice(["yes", "no", "true", "false"])
            record["status"] = rng.choice(["new", "paid"])
        if rng.random() < invalid_share:
            field, value = rng.choice(_BREAKAGES)
            if value is None:
                del record[field]
            else:
                record[field] = value
        records.append(record)
    return records


def measure(check: Callable[[dict[str, Any]], Any], records: Sequence[dict[str, Any]],
            min_seconds: float) -> tuple[int, float, float]:
    """Validate the records (again and again) for at least ``min_seconds`` of CPU time.

    Returns (records validated, CPU seconds, wall seconds).
    """
    done, cpu, wall = 0, 0.0, 0.0
    while cpu < min_seconds:
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for record in records:
            check(record)
        cpu += time.process_time() - cpu_start
        wall += time.perf_counter() - wall_start
        done += len(records)
    return done, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="minimum CPU seconds per measurement")
    parser.add_argument("--runs", type=int, default=3, help="runs (the README shows the median)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    repeat("validation", lambda: run(args), args.runs, args.results,
           program="python bench/validation.py")
    if args.results == RESULTS:
        readme.update(ROOT / "README.md", RESULTS)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One run: every validator on the same records, printed and returned."""
    records = make_records(args.records)
    compiled = compile_schema(SCHEMA, table="orders")
    assert compiled.fallback_rules == (), compiled.fallback_rules
    cerberus = AssayValidator(SCHEMA)
    typed_cerberus = AssayValidator(TYPED_SCHEMA)
    results = [compiled.validate(record) for record in records]
    typed = [result.document for result in results if result.document is not None]
    invalid = sum(not result.ok for result in results)

    sample = records[: min(len(records), 1_000)]
    agree = all(
        compiled.validate(r) == _cerberus_result(cerberus, r) for r in sample
    )

    rows: list[tuple[str, Sequence[dict[str, Any]], Callable[[dict[str, Any]], Any]]] = [
        ("Cerberus, normalising (`AssayValidator.validate`)", sample, cerberus.validate),
        ("Cerberus, `normalize=False`, typed records, no coerce", typed[: len(sample)],
         lambda doc: typed_cerberus.validate(doc, normalize=False)),
        ("compiled (`CompiledValidator.validate`)", records, compiled.validate),
    ]
    measured = [(label, *measure(check, docs, args.seconds)) for label, docs, check in rows]
    baseline = measured[0][1] / measured[0][2]

    print(f"Python {platform.python_version()}, 15-field schema, {len(records)} records "
          f"({invalid} invalid, {100 * invalid / len(records):.0f}%), "
          f"verdicts identical to Cerberus on {len(sample)} records: {'yes' if agree else 'NO'}, "
          f"documents left to Cerberus by the compiled path: {compiled.reference_runs}")
    print()
    print("| validator | records | CPU s | records/s (CPU, 1 core) | records/s (wall) "
          "| vs Cerberus |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, done, cpu, wall in measured:
        print(f"| {label} | {done:,} | {cpu:.2f} | {done / cpu:,.0f} | {done / wall:,.0f} "
              f"| {done / cpu / baseline:,.1f}x |")
    print()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min): {load}; os.cpu_count(): {os.cpu_count()}")
    return {"kind": "validation", "records": len(records), "invalid": invalid,
            "agrees_with_cerberus": agree, "fields": len(SCHEMA),
            "methods": [{"method": label, "records": done, "cpu_s": round(cpu, 3),
                         "records_per_cpu_s": round(done / cpu),
                         "records_per_s": round(done / wall)}
                        for label, done, cpu, wall in measured]}


def _cerberus_result(validator: AssayValidator, record: dict[str, Any]) -> Any:
    from assay.processors.validation import ValidationResult

    ok = validator.validate(record)
    return ValidationResult(ok, validator.document if ok else None, validator.errors)


if __name__ == "__main__":
    main()
