"""The report of a run: results.json (documented by results.schema.json), REPORT.md and the
figures, written as one set."""
from verify.report._atomic import atomic_write_bytes, atomic_write_text
from verify.report.markdown import fmt, render_report, summary_table
from verify.report.results import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    claim_record,
    compact,
    dumps,
    environment,
    jsonable,
    load_schema,
    split_timing,
    summary,
    tool_version,
    validate,
)
from verify.report.writer import REPORT_SET, recover, render_report_set, write_report_set

__all__ = [
    "REPORT_SET",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "atomic_write_bytes",
    "atomic_write_text",
    "claim_record",
    "compact",
    "dumps",
    "environment",
    "fmt",
    "jsonable",
    "load_schema",
    "recover",
    "render_report",
    "render_report_set",
    "split_timing",
    "summary",
    "summary_table",
    "tool_version",
    "validate",
    "write_report_set",
]
