"""Run options are declared once (verify/options.py): the command line's flags, verify.run's
keywords, RunRequest's fields, results.json's settings, the recorded command and the argv a
child run is started with all come from that declaration and agree with it."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

import verify
from verify import options
from verify.cli import build_parser, recorded_command
from verify.options import CLI_ONLY, RUN_OPTIONS
from verify.runner import RunRequest

SELECTION = {"claim", "figure", "no_figures", "names", "ids", "help", "command"}


def _dests(parser, command):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest for a in sub._actions}


@pytest.mark.parametrize("command", ["run", "claim", "figure"])
def test_the_flags_are_the_declared_options(command):
    declared = {o.name for o in RUN_OPTIONS + CLI_ONLY if o.cli is not None}
    assert _dests(build_parser(), command) - SELECTION == declared


def test_run_takes_exactly_the_declared_keywords():
    params = inspect.signature(verify.run).parameters
    assert [p for p in params if p not in ("claims", "figures", "command")] == [
        o.name for o in RUN_OPTIONS]
    assert {f.name for f in dataclasses.fields(RunRequest)} == (
        {o.name for o in RUN_OPTIONS} | {"claims", "figures", "command"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'quik'"):
        verify.run(["lemma1"], quik=True)


@pytest.mark.parametrize("values", [
    dict(quick=True, device="cpu", dtype="float32", array="torch", progress=False,
         full_results=True, out="x"),
    dict(scale=True, seed=7, jobs=3, progress=True),
    dict(dask="tcp://h:1", seed=0, quick=False),
])
def test_to_argv_gives_back_the_values(values):
    args = build_parser().parse_args(["run", *options.to_argv(**values)])
    got = options.from_args(args)
    assert {k: got[k] for k in values} == values


def test_settings_and_the_recorded_command_come_from_the_declaration():
    values = options.defaults()
    assert set(options.settings(values)) == {o.name for o in RUN_OPTIONS if o.settings}
    assert {"seed", "quick", "dtype", "device", "array"} <= set(options.settings(values))
    assert "out" not in options.settings(values) and "jobs" not in options.settings(values)
    hidden = options.not_recorded()
    assert hidden == {o.cli: 0 if o.kind == "bool" else 1 for o in RUN_OPTIONS + CLI_ONLY
                      if o.cli and not o.recorded}
    assert recorded_command(["run", "--seed", "2", *[f for f in hidden if hidden[f] == 0]]) == [
        "imaml-verify", "run", "--seed", "2"]
