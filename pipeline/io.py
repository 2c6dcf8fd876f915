"""Atomic file writes, hashing, and reading the CSV files people write, shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

log = logging.getLogger("pipeline.io")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    Readers never see a half-written file: either the old content or the new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600; give the file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json(target: str | os.PathLike, obj) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(target: str | os.PathLike, frame: pd.DataFrame) -> Path:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(target)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_table(path: str | os.PathLike, what: str, columns_needed: str, header: bool = True) -> pd.DataFrame:
    """Read a CSV a person wrote or saved from a spreadsheet: every cell as text (blank cells
    ``""``), column names stripped and lower-cased (without a ``header`` line: numbered from 1).

    Comma, semicolon or tab separated (the first line decides: Excel writes ``;`` where the
    decimal mark is a comma), else by spaces (a list such as ``3 ARDSSevere.png pneumonia``);
    UTF-8 with or without a byte-order mark, else Windows-1252, as Excel's plain "CSV" is on Windows.

    Raises
    ------
    ValueError
        Naming ``what`` and the file: it is empty, not text, or not valid CSV.
    """
    raw = Path(path).read_bytes()
    if raw.startswith(b"PK\x03\x04") and str(path).lower().endswith((".xlsx", ".xlsm")):
        return _read_workbook(path, what, header)
    if raw.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):  # the zip of .ods, the OLE file of .xls
        raise ValueError(f"{what} {path} is a spreadsheet file, not CSV text; save it from the spreadsheet "
                         f"as CSV or .xlsx (columns {columns_needed})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            raise ValueError(f"{what} {path} is not text (neither UTF-8 nor Windows-1252); "
                             "save it as CSV UTF-8") from None
        log.warning("%s %s is not UTF-8; read as Windows-1252 (Excel's CSV on Windows)", what, path)
    first = text.lstrip().split("\n", 1)[0]
    separator = "," if "," in first else next((s for s in (";", "\t") if s in first),
                                              r"\s+" if len(first.split()) > 1 else ",")
    try:
        table = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False,
                            header=0 if header else None, engine="python" if separator == r"\s+" else "c")
    except pd.errors.EmptyDataError:
        raise ValueError(f"{what} {path} is empty; it needs a header line {columns_needed}") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"{what} {path} is not valid CSV: {error}") from None
    return _named(table, what, path, header)


def _read_workbook(path: str | os.PathLike, what: str, header: bool) -> pd.DataFrame:
    """The first sheet of an Excel workbook, every cell as text (a whole number stored as 7.0 as 7)."""
    try:
        sheets = pd.read_excel(path, sheet_name=None, dtype=object, header=0 if header else None)
    except Exception as error:  # openpyxl raises many types for damaged workbooks
        raise ValueError(f"{what} {path} is not a readable Excel workbook: {type(error).__name__}: {error}") from None
    if not sheets:
        raise ValueError(f"{what} {path} has no sheets")
    name, table = next(iter(sheets.items()))
    if len(sheets) > 1:
        log.warning("%s %s: its first sheet, %r, is read (of %s)", what, path, name, ", ".join(map(repr, sheets)))
    table = table.apply(lambda column: column.map(_cell_text))  # Series.map: pandas 2.0 has no DataFrame.map
    return _named(table, what, path, header)


def _cell_text(value) -> str:
    """A workbook cell as text: "" for a blank, ``7`` for a whole number stored as 7.0."""
    if pd.isna(value):
        return ""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _named(table: pd.DataFrame, what: str, path, header: bool) -> pd.DataFrame:
    if not header:
        table.columns = [str(number) for number in range(1, len(table.columns) + 1)]
    table = table.fillna("")  # a row short of cells (a trailing comma left out) reads as blanks
    names = [str(column).strip().lower() for column in table.columns]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        written = [str(column).strip() for column in table.columns if str(column).strip().lower() == twice[0]]
        raise ValueError(f"{what} {path} has two columns named {twice[0]!r} ({', '.join(map(repr, written))}: names "
                         "are read without case); rename one")
    # the names as written, for labels given as column names (one-hot classes: image,MEL,NV)
    table.attrs["written_columns"] = {str(column).strip().lower(): str(column).strip() for column in table.columns}
    table.columns = names
    return table
