"""results.json records, the markdown report and atomic writes."""
from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass

import numpy as np
import pytest

from verify import compare
from verify.registry import Claim
from verify.report import atomic_write_text, claim_record, jsonable, render_report, summary
from verify.report._atomic import atomic_write_bytes

CLAIM = Claim("demo", "a demo claim", "§4", "x <= y", lambda ctx: [], "the appendix is loose")


def _check(measured, bound, relation="<=", allowance=0.0):
    return compare("demo", "§4", "x <= y", measured, bound, relation=relation,
                   allowance=allowance, instance={"seed": 1})


def test_jsonable_turns_arrays_scalars_and_non_finite_numbers_into_json():
    import torch

    class Color(enum.Enum):
        RED = "red"

    @dataclass
    class Point:
        x: float

    out = jsonable({"a": np.arange(3), "b": np.float32(0.5), "c": torch.tensor([1.0, 2.0]),
                    "d": math.inf, "e": -math.inf, "f": math.nan, "g": Color.RED, "h": Point(1.5),
                    "i": (1, np.int64(2)), 3: None})
    assert out == {"a": [0, 1, 2], "b": 0.5, "c": [1.0, 2.0], "d": "inf", "e": "-inf",
                   "f": "nan", "g": "red", "h": {"x": 1.5}, "i": [1, 2], "3": None}


def test_claim_record_worst_instance_and_ratios():
    rec = claim_record(CLAIM, [_check(0.5, 1.0), _check(0.9, 1.0, allowance=0.1),
                               _check(3.0, 1.0, relation=">"), _check(0.0, 0.0, allowance=1e-9)],
                       elapsed_s=0.1)
    assert rec["status"] == "PASS" and rec["instances"] == 4 and rec["failed"] == 0
    assert rec["bound_checks"] == 3 and rec["controls"] == 1
    assert rec["worst_ratio"] == 0.9 and rec["worst_ratio_with_allowance"] == 0.9 / 1.1
    assert rec["rounding_level_checks"] == 1
    assert rec["weakest_control_ratio"] == 3.0
    assert rec["worst"]["measured"] == 0.9


def test_rounding_level_checks_stay_out_of_the_worst_ratio():
    """A bound decayed below rounding (1e-30) with a rounding-level error (1e-16) passes on its
    allowance; its ratio 1e14 says nothing about the bound and is not the claim's worst ratio."""
    rec = claim_record(CLAIM, [_check(0.5, 1.0), _check(1e-16, 1e-30, allowance=1e-14)],
                       elapsed_s=0.0)
    assert rec["status"] == "PASS" and rec["worst_ratio"] == 0.5
    assert rec["rounding_level_checks"] == 1 and rec["worst_ratio_with_allowance"] == 0.5
    beyond = claim_record(CLAIM, [_check(2e-14, 1e-30, allowance=1e-14)], elapsed_s=0.0)
    assert beyond["status"] == "FAIL" and beyond["worst_ratio"] is None
    assert beyond["worst_ratio_with_allowance"] > 1


def test_claim_record_failures_errors_and_empty_runs():
    failed = claim_record(CLAIM, [_check(0.5, 1.0), _check(1.5, 1.0), _check(0.5, 1.0, ">")],
                          elapsed_s=0.0)
    assert failed["status"] == "FAIL" and failed["failed"] == 2
    assert failed["worst"]["relation"] == ">"      # bound/measured = 2 beats ratio 1.5
    assert claim_record(CLAIM, [], elapsed_s=0.0)["status"] == "FAIL"
    err = claim_record(CLAIM, [], elapsed_s=0.0, error="Traceback: boom")
    assert err["status"] == "ERROR" and err["error"] == "Traceback: boom"
    s = summary([failed, err, claim_record(CLAIM, [_check(0.1, 1.0)], elapsed_s=0.0)])
    assert s == {"passed": False, "claims": 3, "failed_claims": ["demo", "demo"], "checks": 4,
                 "failed_checks": 2}


def _doc(records):
    return {"summary": summary(records), "settings": {"seed": 3, "quick": True, "dtype": "float64",
                                                      "device": "cpu", "array": "numpy"},
            "command": ["imaml-verify", "run"], "elapsed_s": {"total": 1.0, "claims": 0.5,
                                                              "figures": 0.5},
            "created": "now", "tool": {"name": "imaml-verify", "version": "0"},
            "environment": {"python": "3", "platform": "p", "cpu_count": 2,
                            "packages": {"numpy": "2"}},
            "claims": records, "figures": {}, "iteration_counts": None}


def test_report_says_pass_and_fail_and_shows_the_loose_places():
    ok = render_report(_doc([claim_record(CLAIM, [_check(0.5, 1.0)], elapsed_s=0.0)]))
    assert "All 1 claims hold" in ok and "FAIL" not in ok
    assert "the appendix is loose" in ok and "--seed 3 --quick" in ok
    bad = render_report(_doc([claim_record(CLAIM, [_check(2.0, 1.0)], elapsed_s=0.0)]))
    assert "1 of 1 claims FAIL" in bad and "**FAIL**" in bad and "**failed**" in bad


def test_atomic_write_replaces_whole_files(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "first")
    assert path.read_text() == "first"
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["a.txt"]


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def fail(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new and half-written")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]        # no temporary file left behind


def test_ratios_near_one_show_which_side_of_one_they_are():
    from verify.report import fmt

    assert fmt(1.0000048803) == "1+4.9e-06" and fmt(0.99999997, 4) == "1-3e-08"
    assert fmt(1.0) == "1" and fmt(0.983) == "0.983" and fmt(None) == "—" and fmt("inf") == "inf"
