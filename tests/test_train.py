"""The trainer: ε falls, the ladder checkpoints reload, resume and ensembles are exact, bad configs fail early."""

import dataclasses
import json
import shutil
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from simlm import HMM
from simlm.checks import as_key
from simlm.errors import ConfigError, ShapeError, TrainingDivergedError
from simlm.jsonio import locked
from simlm.metrics.epsilon import divergence_report
from simlm.models.finite import quad_excess
from simlm.models.transformer import TransformerConfig
from simlm.train import (Training, TrainConfig, exact_epsilon, exact_masked_epsilon, load_lm, masked_eval_positions,
                         train)
from simlm.train import objectives
from simlm.train import trainer as trainer_module
from simlm.worlds.loglinear import LogLinearWorld
from simlm.worlds.memory import MemoryHMM

WORLD = HMM.random(0, 3, 5, family="dirichlet", transition_concentration=0.3, emission_concentration=0.3)
MODEL = TransformerConfig(n_symbols=5, d_model=16, n_layers=1, n_heads=2, max_len=12)
CONFIG = TrainConfig(targets=(0.3, 0.1, 1e-6), batch_size=8, seq_len=12, max_steps=40, eval_every=10,
                     learning_rate=1e-2, warmup_steps=5, eval_sequences=16, checkpoint_every=15)


def eval_tokens(config):
    return np.asarray(WORLD.sample(config.eval_seed, config.eval_sequences, config.seq_len))


def metrics(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(WORLD, MODEL, CONFIG, tmp_path_factory.mktemp("run"), progress=False)


def test_epsilon_decreases_during_training(run):
    eps = [m["epsilon"] for m in metrics(run.run_dir)]
    assert eps[-1] < 0.5 * eps[0]
    assert run.best_epsilon[0] == min(eps)


def test_ladder_checkpoints_hold_their_metadata_and_reload_to_the_recorded_epsilon(run):
    reached = [r for r in run.records if r.reached]
    assert reached, run.records
    for r in reached:
        assert r.epsilon <= r.target and r.overshoot <= 1
        meta = json.loads((r.path and open(f"{r.path}/metadata.json").read()))
        for key in ("target", "epsilon", "epsilon_se", "step", "tokens_seen", "wall_time", "train_config",
                    "model_config", "world_fingerprint", "overshoot"):
            assert key in meta
        assert meta["world_fingerprint"] == WORLD.fingerprint()
        lm = load_lm(r.path)
        eps, _ = exact_epsilon(WORLD, lm, eval_tokens(CONFIG))
        assert eps == pytest.approx(r.epsilon, rel=1e-5)
        assert run.lm(r.target).metadata["step"] == r.step


def test_final_model_is_the_trained_one(run):
    eps, _ = exact_epsilon(WORLD, run.final_lms[0], eval_tokens(CONFIG))
    assert eps == pytest.approx([m["epsilon"] for m in metrics(run.run_dir)][-1], rel=1e-5)


def test_unreached_targets_are_reported(run):
    assert all(not r.reached for r in run.records if (r.seed, r.target) in run.not_reached)
    with pytest.raises(ConfigError, match="no checkpoint"):
        run.lm(1e-9)


def test_resume_equals_an_uninterrupted_run(run, tmp_path):
    first = train(WORLD, MODEL, CONFIG, tmp_path, progress=False, until_step=23)
    assert first.final_step == 23
    resumed = train(WORLD, MODEL, CONFIG, tmp_path, progress=False)
    assert resumed.final_step == run.final_step
    x = eval_tokens(CONFIG)
    np.testing.assert_array_equal(resumed.final_lms[0].next_token_logprobs(x), run.final_lms[0].next_token_logprobs(x))
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("wall_time", "tokens_per_s")} for m in ms]
    assert strip(metrics(tmp_path)) == strip(metrics(run.run_dir))


def test_an_ensemble_equals_separate_runs(run, tmp_path):
    """Each member of a two-seed ensemble is the model its seed trains alone.  Seed 0 alone is the module's
    run (CONFIG), so only seed 3 trains alone here, on the run's compiled step; the ensemble's seeds (0, 3)
    are those whose batches test_a_step_batch_is_one_compiled_call… compiles."""
    config = dataclasses.replace(CONFIG, seeds=(0, 3))
    both = train(WORLD, MODEL, config, tmp_path / "both", progress=False)
    x = eval_tokens(config)
    alone = {0: run, 3: train(WORLD, MODEL, dataclasses.replace(CONFIG, seeds=(3,)), tmp_path / "s3", progress=False)}
    for i, seed in enumerate(config.seeds):
        assert alone[seed].final_step == both.final_step == CONFIG.max_steps
        np.testing.assert_allclose(both.final_lms[i].next_token_logprobs(x),
                                   alone[seed].final_lms[0].next_token_logprobs(x), atol=1e-4)


def test_masked_lm_objective_lowers_the_masked_epsilon(tmp_path):
    model = TransformerConfig(**{**MODEL.to_dict(), "causal": False})
    config = TrainConfig(**{**CONFIG.to_dict(), "objective": "masked-lm", "mask_rate": 0.3, "max_steps": 30})
    result = train(WORLD, model, config, tmp_path, progress=False)
    eps = [m["epsilon"] for m in metrics(tmp_path)]
    assert eps[-1] < eps[0]
    final, _ = exact_masked_epsilon(WORLD, result.final_lms[0], eval_tokens(config))
    assert final < eps[0]
    # the trainer's recorded ε is the exact masked ε at its evaluation positions (evenly spaced, eval_positions)
    positions = masked_eval_positions(config)
    assert positions.tolist() == np.unique(np.linspace(0, 11, 8).astype(int)).tolist()  # 8 of the 12, spread
    at_positions, _ = exact_masked_epsilon(WORLD, result.final_lms[0], eval_tokens(config), positions)
    assert eps[-1] == pytest.approx(at_positions, rel=1e-5)


def test_quad_objective_lowers_the_quad_excess(tmp_path):
    config = TrainConfig(**{**CONFIG.to_dict(), "objective": "quad", "targets": (1e-4,), "max_steps": 30})
    train(WORLD, MODEL, config, tmp_path, progress=False)
    eps = [m["epsilon"] for m in metrics(tmp_path)]
    assert eps[-1] < 0.7 * eps[0]


def test_finite_corpus_regime_trains(tmp_path):
    # CONFIG's 40 steps: the step program (it depends on the schedule, not on the batches' source) is the run's
    config = TrainConfig(**{**CONFIG.to_dict(), "data": "corpus", "corpus_sequences": 32})
    train(WORLD, MODEL, config, tmp_path, progress=False)
    eps = [m["epsilon"] for m in metrics(tmp_path)]
    assert eps[-1] < eps[0]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    config = TrainConfig(**{**CONFIG.to_dict(), "learning_rate": 1e30, "warmup_steps": 0, "grad_clip": 0.0,
                            "weight_decay": 0.0, "targets": (1e-9,)})
    with pytest.raises(TrainingDivergedError, match="last good checkpoint"):
        train(WORLD, MODEL, config, tmp_path, progress=False)
    assert (tmp_path / "last" / "metadata.json").exists()


def test_a_run_directory_of_another_run_is_refused(run):
    with pytest.raises(ConfigError, match="holds a different run"):
        train(WORLD, MODEL, TrainConfig(**{**CONFIG.to_dict(), "learning_rate": 5e-3}), run.run_dir, progress=False)


def test_a_refused_run_leaves_a_directory_without_config_json_as_it_was(run, tmp_path):
    """With config.json gone, a run of another config wrote its own config.json before last/ refused it, so
    the original run was then refused too ('holds a different run') until the file was deleted by hand."""
    copy = tmp_path / "copy"
    shutil.copytree(run.run_dir, copy)
    (copy / "config.json").unlink()
    other = TrainConfig(**{**CONFIG.to_dict(), "learning_rate": 5e-3})
    with pytest.raises(ConfigError, match="holds a checkpoint of a different run"):
        train(WORLD, MODEL, other, copy, progress=False)
    assert not (copy / "config.json").exists()
    assert train(WORLD, MODEL, CONFIG, copy, progress=False).final_step == run.final_step


def test_a_rung_is_found_by_a_float32_target_as_its_directory_names_it(run):
    """lm(np.float32(0.3)) said 'no checkpoint at ε ≤ 0.3; reached: [0.3]' (math.isclose at 1e-9 relative)."""
    rung = next(r for r in run.records if r.reached)
    assert run.lm(np.float32(rung.target)).metadata["step"] == rung.step


@pytest.mark.parametrize("change, error, words", [
    ({"targets": (0.1, -1.0)}, ConfigError, "targets"),
    ({"targets": ()}, ConfigError, "targets"),
    ({"objective": "mse"}, ConfigError, "objective: unknown objective 'mse'"),
    ({"seq_len": 13}, ConfigError, "seq_len: 13 is longer than the model's max_len = 12"),
    ({"objective": "masked-lm"}, ConfigError, "causal=False"),
    ({"seeds": (1, 1)}, ConfigError, "seeds"),
    ({"batch_size": 0}, ConfigError, "batch_size"),
    ({"learning_rate": float("nan")}, ConfigError, "learning_rate"),
    ({"corruption": (0.5, 0.5, 0.5)}, ConfigError, "corruption"),
])
def test_invalid_configs_raise_before_any_compile(monkeypatch, change, error, words):
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        train(WORLD, MODEL, TrainConfig(**{**CONFIG.to_dict(), **change}), progress=False)


def test_model_vocabulary_must_match_the_world():
    with pytest.raises(ShapeError, match="n_symbols"):
        train(WORLD, TransformerConfig(**{**MODEL.to_dict(), "n_symbols": 6}), CONFIG, progress=False)


def test_the_public_training_pieces_retrace_train(run):
    """``Training`` is what ``train`` drives: stepping it by hand reaches the logged ε exactly."""
    row = next(r for r in metrics(run.run_dir) if r["step"] > 0)
    training = Training(WORLD, MODEL, CONFIG)
    state = training.init_state()
    for step in range(row["step"]):
        state, loss = training.step(state, training.batch(step))
    assert loss.shape == (1,) and training.mesh is None
    assert training.evaluate(state.params)[0][:2] == (row["epsilon"], row["epsilon_se"])


class _HostOnlySampler:
    """A world whose ``sample`` reads its key on the host, as a user's world may: not traceable."""

    def __init__(self, world):
        self._world = world

    def __getattr__(self, name):
        return getattr(self._world, name)

    def sample(self, key, n, length):
        seed = key if isinstance(key, int) else int(np.asarray(key)[1])  # a concrete key, read on the host
        return self._world.sample(seed, n, length)


class _UnbatchedSampler(_HostOnlySampler):
    """A world whose ``sample`` traces under ``jit`` but has no batching rule (a host callback): ``vmap``
    refuses it."""

    def sample(self, key, n, length):
        if isinstance(key, int):  # a seed (the held-out set, the corpus)
            return self._world.sample(key, n, length)

        def host(k):
            return np.asarray(self._world.sample(k, n, length))
        return jax.pure_callback(host, jax.ShapeDtypeStruct((n, length), jnp.int32), key)


@pytest.mark.parametrize("data", ["stream", "corpus"])
@pytest.mark.parametrize("kind", ["hmm", "memory", "loglinear", "unbatched"])
def test_a_step_batch_is_one_compiled_call_with_the_tokens_of_world_sample(kind, data):
    """``Training.batch`` compiles the per-seed sampling into one call, one draw vmapped over the seeds'
    keys where the world's sampler batches (every built-in one), else a draw per seed; it must draw exactly
    the tokens (and objective keys) of ``world.sample`` on the per-seed keys, seed by seed."""
    world = {"hmm": WORLD, "memory": MemoryHMM.random(0, 2, 2, 2, 5), "loglinear": LogLinearWorld.random(0, 3, 5, 4),
             "unbatched": _UnbatchedSampler(WORLD)}[kind]
    config = dataclasses.replace(CONFIG, seeds=(0, 3), data=data, corpus_sequences=32)
    training = Training(world, MODEL, config)
    vmapped = kind != "unbatched" or data == "corpus"  # the corpus is drawn once, outside the step's batch
    assert training._batch.__wrapped__.keywords == {"vmapped": vmapped}
    for step in (0, 1, 17, 2**31 + 5):
        batch = training.batch(step)
        for i, s in enumerate(config.seeds):
            k_data, k_obj = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(s), step))
            want = (world.sample(k_data, config.batch_size, config.seq_len) if data == "stream" else
                    training.corpus[jax.random.choice(k_data, config.corpus_sequences, (config.batch_size,), replace=False)])
            np.testing.assert_array_equal(batch.tokens[i], want)
            np.testing.assert_array_equal(batch.keys[i], k_obj)


def test_a_world_that_samples_on_the_host_gets_its_batches_seed_by_seed():
    world = _HostOnlySampler(WORLD)
    training = Training(world, MODEL, CONFIG)
    assert training._batch is None
    k_data = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(0), 4))[0]
    np.testing.assert_array_equal(training.batch(4).tokens[0], world.sample(k_data, CONFIG.batch_size, CONFIG.seq_len))


def test_training_checks_its_arguments_before_any_compile(monkeypatch):
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))
    with pytest.raises(ConfigError, match="config: expected a TrainConfig"):
        Training(WORLD, MODEL, CONFIG.to_dict())
    with pytest.raises(ShapeError, match="n_symbols"):
        Training(WORLD, TransformerConfig(**{**MODEL.to_dict(), "n_symbols": 6}), CONFIG)


def test_a_rung_saved_below_its_window_warns(tmp_path):
    """ε already far below the target at step 0: the rung is saved there, at ε < 0.7 × target — with a
    warning, never silently (its checkpoint is not a model at ε ≈ target)."""
    config = dataclasses.replace(CONFIG, targets=(100.0,), max_steps=1, eval_every=1, checkpoint_every=1)
    with pytest.warns(RuntimeWarning, match=r"ε ≤ 100 is saved at ε = .* below the ladder's window.*initial model"):
        result = train(WORLD, MODEL, config, tmp_path / "run", progress=False)
    assert result.records[0].reached and result.records[0].overshoot < 0.7
    # read back by a rerun into the directory (the saving process may be gone, its warning with it): said again
    with pytest.warns(RuntimeWarning, match=r"ε ≤ 100 was saved by an earlier run at ε = .* below the ladder's"):
        again = train(WORLD, MODEL, config, tmp_path / "run", progress=False)
    assert again.records == result.records


def _every(k):
    """An evaluation schedule of fixed spacing ``k`` in place of the predicted one."""
    return lambda step, trail, nexts, every: step + k


def test_the_last_step_is_evaluated_when_the_schedule_would_pass_it(tmp_path, monkeypatch):
    """Evaluations every 15 steps of 40: the schedule's next evaluation (45) lies past max_steps, and the
    last step is evaluated all the same — the last metrics row is the final model's, at step 40 (every other
    test's spacing divides its max_steps: a trainer that dropped this evaluation passed them all)."""
    monkeypatch.setattr("simlm.train.trainer.next_evaluation", _every(15))
    config = dataclasses.replace(CONFIG, targets=(1e-6,))  # unreachable: no replay, the run goes to max_steps
    result = train(WORLD, MODEL, config, tmp_path, progress=False)
    rows = metrics(tmp_path)
    assert [m["step"] for m in rows] == [0, 15, 30, 40] and result.final_step == config.max_steps
    eps, _ = exact_epsilon(WORLD, result.final_lms[0], eval_tokens(CONFIG))
    assert eps == pytest.approx(rows[-1]["epsilon"], rel=1e-5)


@pytest.fixture(scope="module")
def coarse(tmp_path_factory):
    """The same run evaluated every 8 steps (rungs 0.3 and 0.1) and at every step (an unreachable
    rung added, so it never stops early): the grid of 8 finds ε 0.19 at step 8 and 0.063 at step 16, past both
    windows [0.7, 1] × target.  CONFIG's 40 steps (its learning-rate schedule), so both runs take the
    module run's compiled step; the run at every step (a resume point each) stops, resumably, at step 24,
    past every step the grid of 8 visits."""
    config = dataclasses.replace(CONFIG, targets=(0.3, 0.1), checkpoint_every=1)
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        for k, c in ((1, dataclasses.replace(config, targets=(0.3, 0.1, 1e-6))), (8, config)):
            mp.setattr("simlm.train.trainer.next_evaluation", _every(k))
            run_dir = tmp_path_factory.mktemp(f"every_{k}")
            runs[k] = train(WORLD, MODEL, c, run_dir, progress=False, until_step=24 if k == 1 else None), \
                metrics(run_dir)
    return config, runs


def test_a_rung_crossed_past_its_window_is_replayed_into_it(coarse):
    """The steps since the evaluation before are replayed with evaluations 4× closer (again if need
    be), so each rung is caught within its window, on the very trajectory of the run evaluated at every
    step (training is deterministic), with each replayed evaluation logged once and in step order."""
    config, runs = coarse
    fine = {m["step"]: m["epsilon"] for m in runs[1][1]}
    for t in config.targets:  # the grid of 8 alone would save both rungs below their windows
        first = min(s for s in fine if s % 8 == 0 and fine[s] <= t)
        assert fine[first] < 0.7 * t
    result, rows = runs[8]
    assert [r.reached for r in result.records] == [True, True]
    for r in result.records:
        assert 0.7 * r.target <= r.epsilon <= r.target and r.step % 8 != 0
        assert r.epsilon == pytest.approx(fine[r.step], rel=1e-6)
    steps = [m["step"] for m in rows]
    assert steps == sorted(set(steps)) and len(steps) > 24 // 8 + 1
    for m in rows:
        assert m["epsilon"] == pytest.approx(fine[m["step"]], rel=1e-6)


def test_a_run_interrupted_during_a_replay_resumes_to_the_same_rows(coarse, tmp_path, monkeypatch):
    """Killed at step 5 of the replay of steps 0–8: the resume point (an evaluation of the replay) holds
    the replay, and the rerun logs exactly the rows and rungs of the uninterrupted run."""
    config, runs = coarse
    monkeypatch.setattr("simlm.train.trainer.next_evaluation", _every(8))
    batch, seen = Training.batch, []

    def interrupted(self, step):
        seen.append(step)
        if seen.count(5) == 2:
            raise KeyboardInterrupt
        return batch(self, step)

    monkeypatch.setattr(Training, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(WORLD, MODEL, config, tmp_path, progress=False)
    monkeypatch.setattr(Training, "batch", batch)
    resumed = train(WORLD, MODEL, config, tmp_path, progress=False)
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("wall_time", "tokens_per_s")} for m in ms]
    assert strip(metrics(tmp_path)) == strip(runs[8][1])
    assert [(r.step, r.epsilon) for r in resumed.records] == [(r.step, r.epsilon) for r in runs[8][0].records]


def test_only_a_crossing_past_the_window_more_than_one_step_after_the_anchor_is_replayed():
    from simlm.train.trainer import _replay_gap
    state = {"ladder": [0]}  # the next rung is 0.3: window [0.21, 0.3]
    assert _replay_gap(state, CONFIG, [(0.01, 0, 0, 0)], 2, 10) == 2  # 8 steps, evaluated 4× as often
    assert _replay_gap(state, CONFIG, [(0.01, 0, 0, 0)], 2, 5) == 1
    assert _replay_gap(state, CONFIG, [(0.01, 0, 0, 0)], 9, 10) == 0  # within one step: kept, with a warning
    assert _replay_gap(state, CONFIG, [(0.25, 0, 0, 0)], 2, 10) == 0  # in the window
    assert _replay_gap({"ladder": [3]}, CONFIG, [(0.0, 0, 0, 0)], 2, 10) == 0  # every rung reached


def test_a_torn_row_at_a_resume_point_mid_run_is_recomputed_and_the_run_goes_on_as_before(tmp_path):
    """Stopped at step 12 (every resume point is an evaluation kept), the resume point's own row torn: the
    rerun recomputes it from the resume point's arrays without counting that evaluation twice in the ε
    trail the schedule plans from, so every later evaluation and row is the uninterrupted run's (seven
    evaluations after step 12 in CONFIG's 40 steps, whose compiled step the module's other runs share)."""
    config = dataclasses.replace(CONFIG, eval_every=50, targets=(0.3, 0.1, 0.05, 0.03), checkpoint_every=1000)
    train(WORLD, MODEL, config, tmp_path / "whole", progress=False)
    part = tmp_path / "part"
    train(WORLD, MODEL, config, part, progress=False, until_step=12)
    state = json.loads((part / "last" / "metadata.json").read_text())["ladder_state"]
    assert state["last_eval"] == state["step"] == 12
    log = part / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lines[state["rows"] - 1] = lines[state["rows"] - 1][:10] + "\n"  # torn
    log.write_text("".join(lines))
    train(WORLD, MODEL, config, part, progress=False)
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("wall_time", "tokens_per_s")} for m in ms]
    assert strip(metrics(part)) == strip(metrics(tmp_path / "whole"))


# ---- a world whose laws are off 1 within its atol: ε against the renormalised laws, as exact_epsilon --------

def _loose_world(normalised: bool = False) -> HMM:
    """Emission rows summing to 0.9995, accepted with atol=1e-3 (``normalised``: the same rows divided by
    their sums).  Both rows are off by the same factor, so the loose world's laws are the normalised
    world's × 0.9995 on every sequence: renormalised, they are the normalised world's."""
    B = np.array([[0.7, 0.2, 0.0995], [0.1, 0.3, 0.5995]])
    pi, A = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.2, 0.8]])
    return HMM(pi, A, B / B.sum(1, keepdims=True)) if normalised else HMM(pi, A, B, atol=1e-3)


LOOSE_MODEL = TransformerConfig(n_symbols=3, d_model=8, n_layers=1, n_heads=2, max_len=8)
LOOSE_CONFIG = TrainConfig(targets=(0.05,), batch_size=16, seq_len=6, max_steps=40, warmup_steps=5,
                           learning_rate=1e-2, eval_sequences=16, eval_every=5, eval_positions=6)


@pytest.mark.parametrize("objective", ["cross-entropy", "masked-lm", "quad"])
def test_the_trainer_measures_a_loosely_normalised_world_against_its_renormalised_laws(objective):
    """ε, TV and their standard errors are the host functions' (divergence_report, which renormalises the
    world's laws), not 5e-4 nats lower; the Quad excess is that of the normalised world's p*."""
    loose = _loose_world()
    masked = objective == "masked-lm"
    model = TransformerConfig(**{**LOOSE_MODEL.to_dict(), "causal": not masked})
    training = Training(loose, model, dataclasses.replace(LOOSE_CONFIG, objective=objective))
    params = training.init_state().params
    got = training.evaluate(params)[0]
    tokens, lm = np.asarray(training.eval_tokens), training.lm(params, 0)
    report = divergence_report(loose, lm, tokens, masked=masked, positions=np.arange(6) if masked else None)
    if objective == "quad":
        p_star = np.exp(np.asarray(_loose_world(normalised=True).next_token_logprobs(tokens)))
        net = nnx.merge(training.graphdef, training.member_params(params, 0), training.rest)
        f = np.asarray(net.features(objectives.causal_inputs(jnp.asarray(tokens), net.config)))
        excess = [np.mean(quad_excess(f[i], p_star[i], net.unembedding)) for i in range(len(tokens))]
        assert got[0] == pytest.approx(np.mean(excess), rel=1e-5)
        assert got[2:] == pytest.approx((report.tv, report.tv_se), rel=1e-5)
    else:
        assert got == pytest.approx((report.epsilon, report.epsilon_se, report.tv, report.tv_se), rel=1e-5)
        exact = exact_masked_epsilon(loose, lm, tokens, np.arange(6)) if masked else exact_epsilon(loose, lm, tokens)
        assert got[0] == pytest.approx(exact[0], rel=1e-5)


def test_a_rung_on_a_loosely_normalised_world_is_at_its_exact_epsilon(tmp_path):
    """The rung's recorded ε is exact_epsilon of its checkpoint on the held-out set, so the ladder never
    saves a model whose real ε is above the target."""
    loose = _loose_world()
    result = train(loose, LOOSE_MODEL, LOOSE_CONFIG, tmp_path, progress=False)
    (rung,) = result.records
    assert rung.reached
    tokens = loose.sample(LOOSE_CONFIG.eval_seed, LOOSE_CONFIG.eval_sequences, LOOSE_CONFIG.seq_len)
    eps, _ = exact_epsilon(loose, result.lm(rung.target), tokens)
    assert eps == pytest.approx(rung.epsilon, rel=1e-5) and eps <= rung.target


def test_the_reference_laws_renormalise_rows_off_by_more_than_2e_6_and_keep_the_others_bit_for_bit():
    """The documented threshold, from both sides: a row off 1 by 5e-6 (inside check_laws's 1e-5) is scored
    against its renormalised law, one off by 1e-6 (float32 rounding's scale) as given.  The two worlds the
    trainer tests above use are off by 5e-4 and by rounding: a threshold 100× looser passed them both."""
    law = np.log(np.array([0.5, 0.3, 0.2]))
    rows = np.stack([law + 5e-6, law + 1e-6]).astype(np.float32)
    got = np.asarray(trainer_module._reference_laws("laws", rows))
    assert abs(float(jax.nn.logsumexp(got[0].astype(np.float64)))) < 3e-7
    np.testing.assert_array_equal(got[1], rows[1])


@pytest.mark.parametrize("objective", ["cross-entropy", "masked-lm"])
def test_a_normalised_world_s_laws_are_scored_as_the_world_gives_them(objective):
    """Rows normalised to float rounding are not touched: ε on such worlds is what it was, bit for bit."""
    masked = objective == "masked-lm"
    model = TransformerConfig(**{**MODEL.to_dict(), "causal": not masked})
    config = dataclasses.replace(CONFIG, objective=objective)
    training = Training(WORLD, model, config)
    tokens = eval_tokens(config)
    positions = np.unique(np.linspace(0, config.seq_len - 1, config.eval_positions).astype(np.int32))
    want = jnp.log(WORLD.masked_token_probs(tokens, positions)) if masked else WORLD.next_token_logprobs(tokens)
    np.testing.assert_array_equal(training.eval_ref, want)


# ---- seeds: every seed in [0, 2**63) its own stream; those below 2**32 the keys they always had ---------------

def test_seeds_beyond_2_32_have_streams_of_their_own():
    for seed in (0, 5, 2**31 + 1, 2**32 - 1):
        np.testing.assert_array_equal(as_key(seed), jax.random.PRNGKey(seed))
    np.testing.assert_array_equal(as_key(2**32 + 5), np.array([1, 5], np.uint32))  # PRNGKey under jax_enable_x64
    assert not np.array_equal(WORLD.sample(0, 4, 8), WORLD.sample(2**32, 4, 8))
    assert not np.array_equal(WORLD.sample(5, 4, 8), WORLD.sample(2**32 + 5, 4, 8))
    np.testing.assert_array_equal(WORLD.sample(5, 4, 8), WORLD.sample(jax.random.PRNGKey(5), 4, 8))
    config = dataclasses.replace(CONFIG, seeds=(0, 2**32, 5))
    batch = Training(WORLD, MODEL, config).batch(3)
    assert not np.array_equal(batch.tokens[0], batch.tokens[1])
    assert not np.array_equal(batch.keys[0], batch.keys[1])
    k_data, k_obj = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), 3))  # seed 5: its batch as before
    np.testing.assert_array_equal(batch.tokens[2], WORLD.sample(k_data, config.batch_size, config.seq_len))
    np.testing.assert_array_equal(batch.keys[2], k_obj)


def test_a_second_training_into_a_run_directory_waits_for_the_first_and_reads_its_results(tmp_path, monkeypatch):
    """Two trainings of one run into one directory (a sweep's jobs on the same world): the second waits on
    the directory's lock while the first trains, then finds the finished run and returns its results
    without a step of its own."""
    entered, directory = [], tmp_path / "shared"
    real = trainer_module._train

    def spy(*args, **kwargs):
        entered.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "_train", spy)
    directory.mkdir()
    second = []
    with locked(directory, ".train.lock", what="the run", advice="-"):  # held as the first training holds it
        waiter = threading.Thread(target=lambda: second.append(train(WORLD, MODEL, CONFIG, directory, progress=False)))
        waiter.start()
        first = train(WORLD, MODEL, CONFIG, directory, progress=False)  # the lock is re-entrant in its thread
        assert entered == [threading.get_ident()]  # the other training has not begun while this one ran
        rows = (directory / "metrics.jsonl").read_text()
    waiter.join()
    assert len(entered) == 2 and (directory / "metrics.jsonl").read_text() == rows  # it trained no step
    assert [(r.target, r.step, r.epsilon) for r in second[0].records] == \
        [(r.target, r.step, r.epsilon) for r in first.records]


def test_an_lm_read_back_from_a_checkpoint_shares_the_live_lms_compiled_programs(tmp_path):
    """Orbax places each restored array on a device (committed), and a jitted function given committed
    arguments compiles a program of its own: a rung's LM read back and the live run's final LM compiled every
    prompt fit twice (~10 s a compile in experiment 2).  Restored arrays are uncommitted, as a computation's."""
    from simlm.models.transformer import TransformerLM, init_transformer
    from simlm.train.checkpoint import save_model

    model = init_transformer(MODEL, 0)
    save_model(tmp_path / "ck", nnx.state(model, nnx.Param), {"model_config": MODEL.to_dict()})
    live, read_back = TransformerLM(model), load_lm(tmp_path / "ck")
    assert not any(x.committed for x in jax.tree.leaves(read_back.state))
    total = jax.jit(lambda s: sum(jnp.sum(x) for x in jax.tree.leaves(s)))
    assert float(total(live.state)) == float(total(read_back.state)) and total._cache_size() == 1


def test_members_are_read_by_one_compiled_program_and_copies_survive_the_donating_step():
    """A member's parameters are one compiled program for every member (a rung's checkpoint, the final LMs;
    indexing leaf by leaf compiled one program per leaf shape, 0.8 s at an experiment-1 run's first rung),
    the same values as indexing, uncommitted like the stacked arrays; the anchor's copy of the state is one
    dispatch and owns its buffers, so the step that donates the live state leaves it intact."""
    from simlm.train import trainer as trainer_module

    training = Training(WORLD, MODEL, dataclasses.replace(CONFIG, seeds=(0, 1, 2)))
    state = training.init_state()
    before = trainer_module._member._cache_size()
    members = [training.member_params(state.params, i) for i in range(3)]
    assert trainer_module._member._cache_size() - before <= 1
    for i, member in enumerate(members):
        for got, stacked in zip(jax.tree.leaves(member), jax.tree.leaves(state.params)):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(stacked)[i])
            assert not got.committed
    kept = training.copy(state)
    want = [np.array(x) for x in jax.tree.leaves(state)]
    state, _ = training.step(state, training.batch(0))  # donates the state `kept` was copied from
    assert all(np.array_equal(np.asarray(k), w) for k, w in zip(jax.tree.leaves(kept), want))
    assert not all(np.array_equal(np.asarray(k), np.asarray(s)) for k, s in zip(jax.tree.leaves(kept),
                                                                                  jax.tree.leaves(state)))


def test_a_trained_lm_warns_when_a_law_reads_a_position_it_was_never_trained_at(run):
    """Trained at seq_len = 12, the causal model's inputs use positions 0…11; the appended law on 12 tokens reads
    position 12, whose learned embedding is still its random initial value (the law changed by 0.06 nats when
    that row alone was zeroed, in a reviewer's tiny model) — silently before.  The LMs train() returns and
    load_lm restores know their training length; 11 tokens read only trained positions."""
    from simlm.errors import UntrainedPositionWarning

    x = np.asarray(WORLD.sample(3, 2, 12))
    for lm in (run.final_lms[0], load_lm(next(r.path for r in run.records if r.reached))):
        assert lm.trained_length == 12
        with pytest.warns(UntrainedPositionWarning, match="reads inputs of 13 positions.*position 12 keeps its"):
            lm.appended_token_logprobs(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lm.appended_token_logprobs(x[:, :11])
            lm.next_token_logprobs(x)


def test_a_run_stopped_by_until_step_before_evaluating_diverged_parameters_raises(tmp_path):
    """At lr 1e30 the first update makes the parameters NaN while the loss it reports (computed before the
    update) is finite; with ``until_step=1`` no evaluation read them and ``train`` returned NaN models as
    its final_lms.  It raises, as the uninterrupted run does at its next evaluation."""
    from simlm.errors import TrainingDivergedError

    # test_nan_loss…'s run (its compiled step), evaluated every 50 steps: none after step 0 in its 40
    config = TrainConfig(**{**CONFIG.to_dict(), "learning_rate": 1e30, "warmup_steps": 0, "grad_clip": 0.0,
                            "weight_decay": 0.0, "targets": (1e-9,), "eval_every": 50})
    with pytest.raises(TrainingDivergedError, match="non-finite at step 1.*until_step stopped the run at step 1"):
        train(WORLD, MODEL, config, tmp_path, progress=False, until_step=1)
    with pytest.raises(TrainingDivergedError):  # the resume point is step 0's, and resuming diverges again
        train(WORLD, MODEL, config, tmp_path, progress=False)
