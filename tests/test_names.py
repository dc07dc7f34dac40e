"""'Did you mean': a misspelt model, dataset, attention, task or option name gets the names it most likely
meant, in the library's ValueError and in the command line's one error line (which prints it)."""

import pytest
from click.testing import CliRunner

import dia_ode
from dia_ode.attention import get_attention
from dia_ode.cli import main
from dia_ode.data import load_dataset
from dia_ode.tasks import get_task
from dia_ode.util import close_matches, did_you_mean


def test_close_matches_offer_the_nearest_names_only():
    assert close_matches("dia_resnt20", dia_ode.list_models()) == ["dia_resnet20"]  # not dia_resnet32 as well
    assert close_matches("DIA_resnet20", dia_ode.list_models()) == ["dia_resnet20"]  # case does not matter
    assert sorted(close_matches("resnet", ["resnet32", "resnet44", "wrn16_2"])) == ["resnet32", "resnet44"]  # tied
    assert did_you_mean("vit", ["unet_s", "odenet"]) == ""  # nothing close: no guess
    assert did_you_mean(["reducton", "sma", "zzz"], ["reduction", "sam"]) == \
        " (did you mean 'reduction' for 'reducton', 'sam' for 'sma'?)"


@pytest.mark.parametrize("call,guess", [
    (lambda: dia_ode.create_model("dia_resnt20"), "dia_resnet20"),
    (lambda: dia_ode.create_model("dia_resnet20", reducton=2), "reduction"),
    (lambda: dia_ode.create_model("resnet20", attention="dai"), "dia"),
    (lambda: dia_ode.create_model("dia_resnet20", sam="ecca"), "eca"),
    (lambda: dia_ode.list_models(family="resnt"), "resnet"),
    (lambda: get_attention("shraed"), "shared"),
    (lambda: load_dataset("fashoin-mnist"), "fashion-mnist"),
    (lambda: get_task("difusion"), "diffusion"),
    (lambda: get_task("diffusion", {"timestep": 10}), "timesteps"),
    (lambda: dia_ode.train(epoch=1), "epochs"),
], ids=["model", "model option", "attention", "sam", "family", "attention name", "dataset", "task", "task option",
        "train field"])
def test_library_errors_say_which_name_a_typo_meant(call, guess):
    with pytest.raises((ValueError, TypeError), match=f"did you mean '{guess}'"):
        call()


@pytest.mark.parametrize("args,guess", [
    (["train", "--model", "dia_resnt20"], "did you mean 'dia_resnet20'"),
    (["train", "--dataset", "fashion_mnist"], "did you mean 'fashion-mnist'"),
    (["train", "--model-option", "reducton=2"], "did you mean 'reduction'"),
    (["train", "--model-option", "dia_resnt20:reduction=2"], "did you mean 'dia_resnet20'"),
    (["train", "--task", "diffusion", "--task-option", "timestep=10"], "did you mean 'timesteps'"),
    (["train", "--task", "difusion"], "did you mean 'diffusion'"),
    (["ls", "--options", "dia_resnt20"], "did you mean 'dia_resnet20'"),
    (["ls", "modles"], "did you mean 'models'"),
    (["train", "--epoch", "1"], "Did you mean one of: '--epochs'"),  # Click's own, for flags and commands
    (["trian"], "Did you mean 'train'"),
])
def test_the_cli_prints_the_guess_in_its_one_error_line(args, guess, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --out's default is checked (and left alone) here
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and guess in errors[0], result.output
    assert "Traceback" not in result.output and not any(tmp_path.iterdir())
