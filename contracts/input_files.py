"""Files people hand the platform, checked before anything reads them.

A missing file, a folder, an empty file or a CSV where Parquet was asked becomes one
`InputFileError` that names the file and says what was expected, before any budget is spent or
any output is written. Nothing here quotes a file's content: an input may hold phone numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from contracts.errors import InputFileError

__all__ = ["PARQUET_MAGIC", "check_input_file", "read_parquet_input"]

PARQUET_MAGIC = b"PAR1"  # a Parquet file starts (and ends) with these four bytes
_TO_PARQUET = (
    "if it is a CSV, convert it first, e.g. `duckdb -c \"COPY (FROM 'in.csv') TO 'out.parquet'\"`"
)


def check_input_file(
    path: Path, *, what: str, magic: bytes = b"", hint: str = "", not_magic: str = ""
) -> Path:
    """Return `path` when it is a readable, non-empty file that starts with `magic`.

    `what` names the file in the message without an article ("sealed batch"); `hint` says where
    a good one comes from ("`fusion vendor pack` writes one"); `not_magic` what to do when the
    file is of another kind.
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not path.exists():
        raise InputFileError(
            f"{path} does not exist: give the path of the {what}{tail}", path=str(path)
        )
    if path.is_dir():
        raise InputFileError(
            f"{path} is a folder: give the {what} file itself{tail}", path=str(path)
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(max(len(magic), 1))
    except PermissionError:
        raise InputFileError(
            f"{path} cannot be read (permission denied): give the {what} as a file this account "
            "can read, or change its permissions",
            path=str(path),
        ) from None
    if not head:
        raise InputFileError(f"{path} is empty: give the {what}{tail}", path=str(path))
    if magic and not head.startswith(magic):
        fix = f"; {not_magic}" if not_magic else tail
        raise InputFileError(f"{path} is not a {what} file{fix}", path=str(path))
    return path


def read_parquet_input(
    path: Path, *, what: str, columns: Sequence[str] = (), hint: str = ""
) -> pl.DataFrame:
    """Return the Parquet table at `path`, refusing anything else with what to do.

    `columns` must all be present (the contract checks their content later).
    """
    check_input_file(
        path, what=f"{what} (Parquet)", magic=PARQUET_MAGIC, hint=hint, not_magic=_TO_PARQUET
    )
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise InputFileError(
            f"{path} is not a readable Parquet file ({type(error).__name__}: cut short or "
            f"damaged): write the {what} again",
            path=str(path),
        ) from None
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        present = ", ".join(frame.columns[:12]) + (", ..." if frame.width > 12 else "")
        raise InputFileError(
            f"{path} has no column {', '.join(missing)} (it has {present or 'none'}): the "
            f"{what} needs {', '.join(columns)}{'; ' + hint if hint else ''}",
            path=str(path),
        )
    return frame
