"""The `imaml-verify` command end to end: a quick run writes every file and exits 0; a planted
failing (or crashing, or empty) claim makes it exit non-zero and the report say so; an
interrupted run writes nothing."""
from __future__ import annotations

import json

import pytest

from verify import compare
from verify.cli import main
from verify.figures import FIGURES
from verify.registry import CLAIMS, Claim, all_claims
from verify.report import validate


def test_quick_run_passes_and_writes_every_file(quick_run):
    status, out, doc, stdout = quick_run
    assert status == 0, stdout
    for name in ("REPORT.md", "results.json", "results.schema.json"):
        assert (out / name).stat().st_size > 0
    report = (out / "REPORT.md").read_text(encoding="utf-8")
    names = [c["name"] for c in doc["claims"]]
    assert names == list(all_claims())              # every registered claim ran
    for c in doc["claims"]:
        assert c["status"] == "PASS" and c["instances"] > 0
        assert f"`{c['name']}`" in report and c["statement"] in report
    assert set(doc["figures"]) == set(FIGURES)
    for fig_id, f in doc["figures"].items():
        if f["status"] == "skipped":                  # only optional parts may be missing
            assert fig_id in ("fig5", "fig7") and f["reason"], f
            assert f["reason"] in report
            continue
        assert f["status"] == "drawn", f["reason"]
        assert [p.rsplit(".", 1)[1] for p in f["files"]] == ["png"]   # SVG in full runs only
        for rel in f["files"]:
            assert (out / rel).stat().st_size > 1000
            assert rel in report or rel.endswith(".svg")
        assert f["caption"] in report
    assert doc["iteration_counts"]["rows"]
    assert doc["settings"]["seed"] == 0 and doc["settings"]["quick"] is True
    assert doc["environment"]["packages"]["numpy"]
    # the terminal summary table: one row per claim with its verdict
    for c in doc["claims"]:
        assert any(line.startswith(c["name"]) and line.endswith("PASS")
                   for line in stdout.splitlines())


def test_quick_run_json_follows_its_schema(quick_run):
    _, out, doc, _ = quick_run
    validate(doc)
    assert json.loads((out / "results.schema.json").read_text())["title"] == "imaml-verify results"


def test_schema_rejects_a_broken_document(quick_run):
    """Negative control of the schema check."""
    import jsonschema

    _, _, doc, _ = quick_run
    broken = json.loads(json.dumps(doc))
    broken["claims"][0]["status"] = "MAYBE"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    del broken["summary"]
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


@pytest.fixture
def planted(monkeypatch):
    """Register claims with planted defects for one test."""
    def add(name, fn):
        monkeypatch.setitem(CLAIMS, name, Claim(name, f"planted {name}", "§0",
                                                "a planted defect", fn, None))
    return add


def _bound_check(measured):
    return compare("planted", "§0", "measured <= 1", measured, 1.0,
                   instance={"seed": 0, "planted": True})


def test_planted_failing_claim_fails_the_run(planted, tmp_path, capsys):
    planted("planted-wrong-sign", lambda ctx: [_bound_check(0.5), _bound_check(2.0)])
    status = main(["claim", "planted-wrong-sign", "--out", str(tmp_path), "--no-progress"])
    assert status == 1
    doc = json.loads((tmp_path / "results.json").read_text())
    validate(doc)
    rec = doc["claims"][0]
    assert rec["status"] == "FAIL" and rec["failed"] == 1 and rec["worst"]["measured"] == 2.0
    assert doc["summary"] == {"passed": False, "claims": 1,
                              "failed_claims": ["planted-wrong-sign"], "checks": 2,
                              "failed_checks": 1}
    report = (tmp_path / "REPORT.md").read_text()
    assert "**FAIL**" in report and "claims FAIL" in report
    assert "planted-wrong-sign" in capsys.readouterr().out


def test_a_passing_claim_alone_exits_zero(planted, tmp_path):
    """The other half of the control above: same claim shape, no defect."""
    planted("planted-fine", lambda ctx: [_bound_check(0.5)])
    assert main(["claim", "planted-fine", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "All 1 claims hold" in (tmp_path / "REPORT.md").read_text()


def test_crashing_or_empty_claim_fails_the_run(planted, tmp_path):
    def crash(ctx):
        raise RuntimeError("planted crash")

    planted("planted-crash", crash)
    planted("planted-empty", lambda ctx: [])
    status = main(["run", "--claim", "planted-crash", "--claim", "planted-empty", "--no-figures",
                   "--out", str(tmp_path), "--no-progress"])
    assert status == 1
    doc = json.loads((tmp_path / "results.json").read_text())
    validate(doc)
    by_name = {c["name"]: c for c in doc["claims"]}
    assert by_name["planted-crash"]["status"] == "ERROR"
    assert "planted crash" in by_name["planted-crash"]["error"]
    assert by_name["planted-empty"]["status"] == "FAIL"
    assert "planted crash" in (tmp_path / "REPORT.md").read_text()


def test_interrupted_run_writes_nothing_and_says_so(planted, tmp_path, capsys):
    def interrupt(ctx):
        raise KeyboardInterrupt

    planted("planted-interrupt", interrupt)
    status = main(["claim", "planted-interrupt", "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 130
    assert not (tmp_path / "out").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "previous report" in err[0]


def test_partial_selection_does_not_overwrite_the_full_report(planted, tmp_path, monkeypatch):
    planted("planted-fine", lambda ctx: [_bound_check(0.5)])
    monkeypatch.chdir(tmp_path)
    assert main(["claim", "planted-fine", "--no-progress"]) == 0
    assert (tmp_path / "reports" / "claim" / "REPORT.md").is_file()
    assert main(["run", "--claim", "planted-fine", "--no-figures", "--no-progress"]) == 0
    assert (tmp_path / "reports" / "partial" / "REPORT.md").is_file()
    assert not (tmp_path / "reports" / "REPORT.md").exists()


def test_one_figure_and_json_output(tmp_path, capsys):
    assert main(["figure", "1", "--quick", "--json", "--out", str(tmp_path), "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    validate(doc)
    assert list(doc["figures"]) == ["fig1"] and doc["claims"] == []
    assert (tmp_path / "figures" / "fig1-cg-error.png").stat().st_size > 1000


def test_list_names_every_claim_and_figure(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in all_claims():
        assert name in out
    for f in FIGURES.values():
        assert f.id in out and f.name in out


@pytest.mark.parametrize("argv, words", [
    (["claim", "no-such-claim"], "no-such-claim"),
    (["figure", "fig99"], "fig99"),
    (["run", "--device", "cpu", "--array", "numpy", "--device", "cuda:7"], "cuda"),
])
def test_bad_selection_is_a_usage_error(argv, words, capsys):
    import torch

    if "cuda:7" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_cuda_device_selects_torch_arrays():
    import torch

    from verify.runner import RunRequest, UsageError, validate_request

    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA"):
            validate_request(RunRequest(device="cuda"))
    else:  # pragma: no cover - GPU machines
        assert validate_request(RunRequest(device="cuda"))[3].array == "torch"
    ctx = validate_request(RunRequest(dtype="float32"))[3]
    assert (ctx.array, ctx.device, ctx.dtype) == ("numpy", "cpu", "float32")


@pytest.mark.parametrize("where", ["gpu", "fewshot"])
def test_fewshot_results_join_the_report(planted, tmp_path, where):
    """When the few-shot check has written its JSON, REPORT.md carries its section."""
    gpu_check = pytest.importorskip("verify.fewshot.gpu_check")
    planted("planted-fine", lambda ctx: [_bound_check(0.5)])
    (tmp_path / where).mkdir()
    name = gpu_check.OUTPUT_NAME if where == "gpu" else "results.json"
    (tmp_path / where / name).write_text(json.dumps({"device": "cpu", "dry_run": True}))
    assert main(["claim", "planted-fine", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "## Few-shot integration" in (tmp_path / "REPORT.md").read_text()
    doc = json.loads((tmp_path / "results.json").read_text())
    validate(doc)
    assert doc["fewshot"]["dry_run"] is True
