"""Moved to `fusion.reports.match`."""

# transitional: removed when the CLI imports fusion.reports
from fusion.reports.match import REPORT_FILE, write_match_report

__all__ = ["REPORT_FILE", "write_match_report"]
