"""`advlab evaluate` under torchrun: the same results as one process, shards merged, errors on every rank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from advlab.evaluation.distributed import World, assigned, shard_dir
from advlab.results import shards
from advlab.results.plan import Job
from advlab.results.store import Store

ARGS = ["--model", "lenet-mnist", "--n", "60", "--batch-size", "20", "--attacks", "noise,fgsm", "--eps", "0.1,0.3",
        "--no-checks", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def single(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "advlab", "evaluate", *ARGS, "--threads", "1", "--out", str(out),
                           *extra], env=ENV, capture_output=True, text=True, timeout=300)


def torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "advlab", "--", "evaluate", *ARGS, "--out", str(out), *extra],
                          env=ENV, capture_output=True, text=True, timeout=300)


def rows(d: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((d / "results.json").read_text())]


@given(st.integers(1, 6), st.integers(1, 9), st.integers(1, 5))
def test_the_ranks_shares_partition_the_batches(n_jobs, n_batches, size):
    jobs = [Job(f"a{j}", "linf", 0.1, (0.1,)) for j in range(n_jobs)]
    shares = [assigned(jobs, n_batches, World(r, size)) for r in range(size)]
    pairs = [(j.key, b) for share in shares for j, b in share]
    assert sorted(pairs) == sorted((j.key, b) for j in jobs for b in range(n_batches))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_shard_loads_into_a_store_once_and_again_without_change(tmp_path):
    a, b = Store(tmp_path / "a.sqlite"), Store(tmp_path / "b.sqlite")
    cols = ("adv", "top1", "top5", "pred", "conf", "l0", "l1", "l2", "linf", "queries")
    a.put_batch("fgsm|linf|0.1", 1, 0.25, [2, 3], {c: [1, 0] for c in cols},
                [(2, np.zeros((1, 2, 2), np.float32), np.ones((1, 2, 2), np.float32))])
    assert shards.load(b, shards.dump(a)) == 2
    shards.load(b, shards.dump(a))
    assert b.done_batches("fgsm|linf|0.1") == {1} and b.seconds("fgsm|linf|0.1") == 0.25
    assert b.outcomes("fgsm|linf|0.1")["adv"].tolist() == [True, False]
    assert b.examples("fgsm|linf|0.1")[0][2].tolist() == [[[1.0, 1.0], [1.0, 1.0]]]


def test_two_processes_give_the_single_process_results_merge_a_left_shard_and_share_a_refusal(tmp_path):
    one = single(tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = torchrun(tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    assert rows(tmp_path / "two") == rows(tmp_path / "one")
    assert not (tmp_path / "two" / "shards").exists()  # each worker removed its shard once merged
    # a worker's shard left by a killed run is merged on the next run: here it holds every batch,
    # so the run attacks nothing and still gives the same table
    left = shard_dir(tmp_path / "three", 1)
    left.mkdir(parents=True)
    shutil.copy(tmp_path / "one" / "results.sqlite", left / "results.sqlite")
    three = torchrun(tmp_path / "three")
    assert three.returncode == 0, three.stderr[-3000:]
    assert rows(tmp_path / "three") == rows(tmp_path / "one")
    before, after = Store(tmp_path / "one" / "results.sqlite"), Store(tmp_path / "three" / "results.sqlite")
    keys = [k for (k,) in before.db.execute("SELECT DISTINCT job FROM batches")]
    assert keys and all(after.seconds(k) == before.seconds(k) for k in keys)  # wall times copied: nothing re-run
    # rank 0's refusal (another configuration in the same directory) stops every rank with its message
    res = torchrun(tmp_path / "one", "--seed", "1")
    assert res.returncode != 0
    assert res.stderr.count("holds results of a different configuration") >= 2, res.stderr[-3000:]


def test_ranks_that_planned_different_evaluations_are_refused(tmp_path):
    # the worker (rank 1) sees another seed through the environment: its plan differs from rank 0's
    script = tmp_path / "per_rank.py"
    script.write_text("import os, sys\nfrom advlab.cli import main\n"
                      "extra = ['--seed', '1'] if os.environ['RANK'] == '1' else []\n"
                      "sys.exit(main(sys.argv[1:] + extra))\n")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), "--", "evaluate", *ARGS, "--out", str(tmp_path / "out")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert res.stderr.count("planned another evaluation than rank 0") >= 2, res.stderr[-3000:]
