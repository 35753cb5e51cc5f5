"""A seed ensemble spread over several devices trains the same models as on one device.

JAX fixes its device count when it starts, so each side runs in its own subprocess: the same tiny
training on 4 host CPU devices (``--xla_force_host_platform_device_count=4``; the seed axis sharded, one
member a device) and on 1 device (the plain path), each then resumed from its run directory.  Both write what
they trained as JSON; the test compares them.

Not bit-identical, by design of XLA rather than of the sharding: a member's arithmetic depends on how
many members its device computes at once (XLA:CPU picks kernels and reduction orders by shape), so one
device with 4 members and 4 devices with 1 each round differently in the last bits — exactly as an
ensemble member already differs, at the same level, from the same seed trained alone.  The ladders
(which rung, at which step) are identical; ε, losses and parameters agree to ~1e-6.
"""

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest

from simlm.errors import ConfigError
from simlm.train import seed_mesh

ROOT = Path(__file__).resolve().parents[1]

# The child: train, then report the ladder, the metrics, the final parameters and where the state lived.
CHILD = textwrap.dedent("""
    import dataclasses, json, sys, tempfile
    import jax, numpy as np
    from simlm.models.transformer import TransformerConfig
    from simlm.train import TrainConfig, Training, seed_mesh, train
    from simlm.worlds import HMM

    devices, out = int(sys.argv[1]), sys.argv[2]
    assert jax.device_count() == devices, jax.devices()
    world = HMM.random(0, 3, 4)
    model = TransformerConfig(n_symbols=4, d_model=8, n_heads=2, n_layers=1, max_len=8)
    # Targets below the initial ε ≈ 0.21, so the run trains and climbs two rungs mid-way.
    config = TrainConfig(targets=(0.2, 0.15), seeds=(0, 1, 2, 3), batch_size=8, seq_len=6, max_steps=30,
                         eval_every=10, eval_sequences=16)

    # (devices, members on each) of every array train() places (initial, restored state; batches) or steps
    placements, place, step = set(), Training.place, Training.step

    def seen(tree):
        for x in jax.tree.leaves(tree):
            placements.add((len(x.sharding.device_set), x.addressable_shards[0].data.shape[0]))
        return tree

    Training.place = lambda self, tree: seen(place(self, tree))
    Training.step = lambda self, state, batch: seen(step(self, state, batch))
    flat = lambda lm: np.concatenate([np.ravel(x) for x in jax.tree.leaves(lm.model)])
    with tempfile.TemporaryDirectory() as tmp:
        result = train(world, model, config, tmp + "/run", progress=False)
        again = train(world, model, config, tmp + "/run", progress=False)  # restores the finished run
        resumed = all(np.array_equal(flat(a), flat(b)) for a, b in zip(result.final_lms, again.final_lms))
        rows = [json.loads(line) for line in open(tmp + "/run/metrics.jsonl")]
        probe = world.sample(7, 2, config.seq_len)  # ordinary arrays, on the default device
        lms = {"final": [np.asarray(lm.next_token_logprobs(probe)).tolist() for lm in result.final_lms],
               "checkpoint": np.asarray(result.lm(0.15, seed=3).next_token_logprobs(probe)).tolist()}
    json.dump({
        "devices": jax.device_count(),
        "mesh": {n: None if seed_mesh(n) is None else seed_mesh(n).devices.size for n in (1, 2, 3, 4, 5, 6, 8)},
        "placements": sorted(placements),
        "records": [dataclasses.asdict(r) | {"path": None} for r in result.records],
        "rows": [{k: v for k, v in r.items() if k not in ("wall_time", "tokens_per_s")} for r in rows],
        "params": [flat(lm).tolist() for lm in result.final_lms],
        "resumed": resumed and again.records == result.records,
        "lms": lms,
    }, open(out, "w"))
""")


def _child(devices: int, out: Path) -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"  # + the suite's
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags.strip(),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(devices), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # a hang guard, not a speed test
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(on 1 device, on 4 devices), trained side by side."""
    tmp = tmp_path_factory.mktemp("sharding")
    with ThreadPoolExecutor(2) as pool:
        one = pool.submit(_child, 1, tmp / "one.json")
        four = pool.submit(_child, 4, tmp / "four.json")
        return one.result(), four.result()


def test_the_four_device_run_shards_every_step_over_the_seeds(runs):
    one, four = runs
    assert (one["devices"], four["devices"]) == (1, 4)
    assert four["placements"] == [[4, 1]]  # state, batch and loss on 4 devices, one member each
    assert one["placements"] == [[1, 4]]  # the plain path: everything on the one device


def test_a_sharded_run_resumes_from_its_run_directory(runs):
    one, four = runs
    assert one["resumed"] and four["resumed"]  # same ladder, same final parameters, bit for bit


def test_the_mesh_takes_the_most_devices_that_split_the_seeds_evenly(runs):
    one, four = runs
    assert set(one["mesh"].values()) == {None}
    assert four["mesh"] == {"1": None, "2": 2, "3": 3, "4": 4, "5": None, "6": 3, "8": 4}


def test_the_ladders_are_the_same(runs):
    one, four = runs
    exact = lambda records: [{k: v for k, v in r.items() if k not in ("epsilon", "epsilon_se", "wall_time")}
                             for r in records]
    assert exact(four["records"]) == exact(one["records"])
    assert [r["reached"] for r in one["records"]] == [True] * 8  # both rungs, every seed: the run trained
    assert {r["step"] for r in one["records"]} - {0}
    for a, b in zip(one["records"], four["records"]):
        assert b["epsilon"] == pytest.approx(a["epsilon"], rel=1e-5, abs=0)
        assert b["epsilon_se"] == pytest.approx(a["epsilon_se"], rel=1e-4, abs=1e-8)


def test_the_metrics_logs_are_the_same(runs):
    one, four = runs
    assert [(r["step"], r["seed"]) for r in four["rows"]] == [(r["step"], r["seed"]) for r in one["rows"]]
    for a, b in zip(one["rows"], four["rows"]):
        assert (a["loss"] is None) == (b["loss"] is None) == (a["step"] == 0)  # no loss before the first step
        for key in ("epsilon", "tv") + (("loss",) if a["step"] else ()):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=0), (a["step"], a["seed"], key)


def test_the_trained_models_are_the_same(runs):
    one, four = runs
    for a, b in zip(one["params"], four["params"]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    for a, b in zip(one["lms"]["final"] + [one["lms"]["checkpoint"]], four["lms"]["final"] + [four["lms"]["checkpoint"]]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_one_device_keeps_the_plain_path():
    assert jax.device_count() > 1 or seed_mesh(4) is None
    assert seed_mesh(4, jax.devices()[:1]) is None
    with pytest.raises(ConfigError, match="n_seeds"):
        seed_mesh(0)
