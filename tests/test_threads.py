"""--threads on every command that computes: applied for the command, restored after it, recorded."""

from __future__ import annotations

import json

import click
import pytest
import torch
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.studies.report.launchers import LocalLauncher


def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


@pytest.mark.parametrize("name,command", [c for c in _commands(main) if not c[0].startswith("ls")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_that_computes_takes_threads(name, command):
    assert "--threads" in [opt for p in command.params for opt in p.opts], name


def _config(out):
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return json.loads((run_dir / "config.json").read_text())


def test_threads_apply_to_the_command_are_recorded_and_are_restored_after_it(tmp_path):
    before = torch.get_num_threads()
    wanted = before + 1
    result = CliRunner().invoke(main, ["integrate", "--problem", "vdp", "--mu", "1", "--t1", "0.5", "--threads",
                                       str(wanted), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert _config(tmp_path)["threads"] == wanted
    assert torch.get_num_threads() == before


def test_without_threads_the_current_setting_is_recorded(tmp_path):
    result = CliRunner().invoke(main, ["integrate", "--problem", "vdp", "--mu", "1", "--t1", "0.5",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert _config(tmp_path)["threads"] == torch.get_num_threads()


def test_a_groups_threads_reach_its_subcommand(tmp_path):
    wanted = torch.get_num_threads() + 1
    result = CliRunner().invoke(main, ["bench", "--threads", str(wanted), "--out", str(tmp_path), "train-step",
                                       "--models", "resnet20", "--batch-size", "2", "--image-size", "8",
                                       "--steps", "1", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    assert _config(tmp_path)["threads"] == wanted


def test_zero_threads_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["integrate", "--threads", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--threads" in result.output


def test_local_workers_share_the_commands_threads(monkeypatch):
    seen = []

    class Pool:  # stands in for the process pool: records what each child would be given
        def __init__(self, *args, **kwargs): ...
        def __enter__(self): return self
        def __exit__(self, *exc): return False

        def submit(self, fn, spec, study, threads):
            seen.append(threads)
            raise RuntimeError("not run")

    import dia_ode.studies.report.launchers as launchers
    monkeypatch.setattr(launchers, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(launchers, "_stop_children", lambda pool: None)

    class Spec:
        def key(self): return "k"

    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with pytest.raises(RuntimeError):
            LocalLauncher(2).run([Spec()], None)
    finally:
        torch.set_num_threads(previous)
    assert seen == [2]
