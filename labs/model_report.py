"""Moved to `fusion.reports.models`."""

# transitional: removed when the CLI imports fusion.reports
from fusion.reports.models import REPORT_FILE, SUMMARY_FILE, Targets, write_model_report

__all__ = ["REPORT_FILE", "SUMMARY_FILE", "Targets", "write_model_report"]
