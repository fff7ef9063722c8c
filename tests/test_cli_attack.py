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
