"""scrm leads import FILE.csv [--source cdp]"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import click
from flask.cli import AppGroup

from app.intake import assign
from app.intake import leads as lead_import
from app.services import services

leads = AppGroup("leads", help="Leads (线索): import from a CSV file.")

FIELDS = (
    "source",
    "external_ref",
    "name",
    "phone",
    "unionid",
    "model",
    "city",
    "dealer",
    "budget",
    "intent",
    "campaign",
)
CHINESE_HEADERS = {
    "来源": "source",
    "线索编号": "external_ref",
    "姓名": "name",
    "手机": "phone",
    "手机号": "phone",
    "车型": "model",
    "城市": "city",
    "经销商": "dealer",
    "预算": "budget",
    "意向分": "intent",
    "活动": "campaign",
}


def _field(header: str) -> str | None:
    name = header.strip().lstrip("\ufeff")
    if name in CHINESE_HEADERS:
        return CHINESE_HEADERS[name]
    name = name.lower()
    return name if name in FIELDS else None


def read_text(path: Path) -> str:
    """UTF-8 (with or without Excel's BOM), else GB18030 (Excel's CSV on a Chinese Windows)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030")


def read_rows(text: str, warn) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number where the record starts, fields) per non-empty record."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    columns: list[str | None] = []
    for header_name in header:
        field = _field(header_name)
        if field is None and header_name.strip():
            warn(f"line 1: column {header_name.strip()!r} is not a lead field; ignored")
        if field is not None and field in columns:
            warn(f"line 1: column {header_name.strip()!r} repeats {field}; the first one is used")
            field = None
        columns.append(field)
    start = reader.line_num + 1
    for record in reader:
        line = start
        start = reader.line_num + 1
        if not any(value.strip() for value in record):
            continue
        row = {field: value for field, value in zip(columns, record, strict=False) if field is not None}
        yield line, row


@leads.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--source", default=None, help="Source of rows that have none (cdp, autohome, dongchedi, website …)."
)
def import_command(file: Path, source: str | None) -> None:
    """Import leads from a CSV file with a header row (English field names or 姓名 手机 车型 城市
    经销商 预算 意向分 来源 活动). Exit code 1 if any row was invalid; the valid rows are imported."""
    name = str(file)

    def warn(message: str) -> None:
        click.echo(f"{name} {message}", err=True)

    def show(result: lead_import.RowResult) -> None:
        for error in result.errors:
            click.echo(f"{name} line {result.row}: {error}", err=True)

    try:
        text = read_text(file)
    except UnicodeDecodeError:
        raise click.ClickException(f"{name}: not UTF-8 or GB18030 text") from None
    try:
        report = lead_import.import_leads(
            services(), read_rows(text, warn), default_source=source, on_result=show
        )
    except assign.AssignmentBusy as exc:
        # Rows stored so far wait as ``new``: running the same import again finishes them.
        message = f"{name}: advisor assignment is busy ({exc}); run the same import again"
        raise click.ClickException(message) from None
    click.echo(
        f"{name}: {report.created} created, {report.duplicates} duplicates, {report.invalid} invalid "
        f"({len(report.results)} rows)"
    )
    if report.invalid:
        raise click.exceptions.Exit(1)
