import json
import subprocess
import sys

from safetensors.torch import load_file


def test_attack_command_saves_adversarials_and_grid(tmp_path, digits_ckpt):
    ckpt = digits_ckpt
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "advlab", "attack", "--model", str(ckpt), "--attack", "pgd", "--eps", "0.3",
         "--n", "40", "--out", str(out), "--param", "steps=20"],
        capture_output=True, text=True, check=True,
    )
    assert "grid.png" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    saved = load_file(str(out / "x_adv.safetensors"))
    assert saved["x_adv"].shape == (40, 1, 8, 8)
    assert summary["acc1_adv"] < 0.3 < summary["acc1_clean"]
    assert (out / "grid.png").stat().st_size > 1000


def test_attacks_command_lists_registry():
    out = subprocess.run([sys.executable, "-m", "advlab", "attacks", "p*"], capture_output=True, text=True,
                         check=True).stdout
    assert "pgd" in out and "fgsm" not in out


def test_attack_command_unknown_attack_one_line():
    proc = subprocess.run([sys.executable, "-m", "advlab", "attack", "--attack", "deepfoo", "--out", "/tmp/x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "did you mean 'deepfool'" in proc.stderr


def test_attack_command_on_a_factory_model_reads_mnist_as_evaluate_does(tmp_path):
    """A factory model records no dataset: `advlab attack` falls back on mnist, as `advlab evaluate` does."""
    from advlab.cli import main

    (tmp_path / "mine.py").write_text("import torch\nfrom torch import nn\n\n\ndef make():\n    torch.manual_seed(0)\n"
                                      "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    out = tmp_path / "out"
    rc = main(["attack", "--model", f"{tmp_path / 'mine.py'}:make", "--attack", "fgsm", "--n", "8", "--out", str(out)])
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["dataset"] == "mnist"


def test_every_command_takes_an_attacks_parameters_as_dash_o(tmp_path):
    """``-o KEY=VALUE`` as poison and physical take it: attack's -o is its --param; evaluate's names the attack."""
    from advlab.cli import main

    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--attack", "pgd", "--eps", "0.1", "--n", "8"]
    assert main(["attack", *common, "--out", str(a), "-o", "steps=3"]) == 0
    assert main(["attack", *common, "--out", str(b), "--param", "steps=3"]) == 0
    assert (a / "x_adv.safetensors").read_bytes() == (b / "x_adv.safetensors").read_bytes()

    toml = tmp_path / "eval.toml"
    toml.write_text("[params.pgd]\nsteps = 40\nstep_size = \"1/50\"\n")  # (a fraction as text: its quotient)
    run = ["evaluate", "--attacks", "pgd", "--eps", "0.1", "--n", "8", "--no-checks", "--no-progress"]
    assert main([*run, "--out", str(tmp_path / "e"), "--config", str(toml), "-o", "PGD.steps=3"]) == 0
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["config"]["params"] == {"pgd": {"steps": 3, "step_size": 0.02}}  # (the flag over the config)


def test_evaluates_dash_o_without_an_attack_fails_in_one_line(tmp_path, capsys):
    from advlab.cli import main

    assert main(["evaluate", "--attacks", "pgd", "--n", "8", "--out", str(tmp_path), "-o", "steps=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-o: expected ATTACK.KEY=VALUE, e.g. -o pgd.steps=100, got 'steps'" in err


def test_an_options_fraction_is_its_quotient_as_the_eps_flags_read_it():
    """``-o eps=8/255`` on train, ``-o pgd.step_size=1/255`` on evaluate: the number (it was refused as text)."""
    from advlab.commands.attack import parse_options

    got = parse_options(["eps=8/255", "step=1e-3/2", "loss=ce", "list=[1, 2]", "odd=1/0", "path=a/b"], "-o")
    assert got == {"eps": 8 / 255, "step": 1e-3 / 2, "loss": "ce", "list": [1, 2], "odd": "1/0", "path": "a/b"}


def test_train_takes_a_fractional_budget_as_an_option(tmp_path):
    from advlab.cli import main

    out = tmp_path / "m.safetensors"
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--defense", "pgd", "-o",
                 "eps=8/255", "-o", "steps=2", "--out", str(out), "--no-progress"]) == 0
    from advlab.models.checkpoint import read_metadata

    assert read_metadata(out)["defense"]["eps"] == 8 / 255
