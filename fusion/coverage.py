"""Moved to `fusion.reports.coverage` (the tables) and `fusion.reports.disclosure` (DEFAULT_K)."""

# transitional: removed when the CLI imports fusion.reports
from fusion.reports.coverage import AGE_BANDS, TABLES, CoverageReport, coverage_report
from fusion.reports.disclosure import DEFAULT_K

__all__ = ["AGE_BANDS", "DEFAULT_K", "TABLES", "CoverageReport", "coverage_report"]
