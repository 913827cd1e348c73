"""The report of a run: results.json (documented by results.schema.json), REPORT.md, written
atomically."""
from verify.report._atomic import atomic_write_bytes, atomic_write_text
from verify.report.markdown import fmt, render_report, summary_table
from verify.report.results import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    claim_record,
    dumps,
    environment,
    jsonable,
    load_schema,
    summary,
    validate,
)
from verify.report.writer import write_outputs

__all__ = [
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "atomic_write_bytes",
    "atomic_write_text",
    "claim_record",
    "dumps",
    "environment",
    "fmt",
    "jsonable",
    "load_schema",
    "render_report",
    "summary",
    "summary_table",
    "validate",
    "write_outputs",
]
