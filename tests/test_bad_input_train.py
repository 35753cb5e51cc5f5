"""Bad input to the trainer: a ConfigError (or ShapeError) naming the argument, raised before anything is
compiled and before a run directory is claimed — never a raw TypeError/AttributeError, never a silently
accepted value."""

import math
import os
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given, strategies as st

from simlm import HMM
from simlm.errors import ConfigError, DistributionError, ShapeError, TokenError
from simlm.models.transformer import TransformerConfig
from simlm.train import Training, TrainConfig, load_lm, train
from simlm.train.checkpoint import checksum
from simlm.train.objectives import OBJECTIVES

WORLD = HMM.random(0, 3, 4)
MODEL = TransformerConfig(n_symbols=4, d_model=8, n_layers=1, n_heads=1, max_len=8)
CONFIG = TrainConfig(targets=(0.1,), batch_size=4, seq_len=8, max_steps=3, eval_sequences=4)
nan, inf = float("nan"), float("inf")

BAD_FIELDS = [
    ("objective", ["x"]), ("objective", None), ("objective", 3), ("objective", "mse"), ("objective", ""),
    ("targets", ()), ("targets", []), ("targets", (0.1, -1.0)), ("targets", (nan,)), ("targets", (inf,)),
    ("targets", ("0.1",)), ("targets", "0.1"), ("targets", None), ("targets", (True,)), ("targets", ((0.1, 0.2),)),
    ("targets", (0.3, 0.3)), ("targets", (0.3, 0.3000001)), ("targets", 0), ("targets", -1.0), ("targets", (1 + 2j,)),
    ("targets", np.array([[0.1]])), ("targets", (0.1, 1e-50)),  # 1e-50: 0 in the trainer's float32 ε
    ("seeds", ()), ("seeds", (-1,)), ("seeds", (1, 1)), ("seeds", (0.5,)), ("seeds", ("0",)), ("seeds", None),
    ("seeds", (True,)), ("seeds", (2**63,)), ("seeds", 1.5), ("seeds", ((0,),)), ("seeds", (np.float64(1.0),)),
    ("batch_size", 0), ("batch_size", -1), ("batch_size", 1.5), ("batch_size", "8"), ("batch_size", None),
    ("batch_size", True), ("batch_size", 2**31), ("batch_size", nan),
    ("seq_len", 0), ("seq_len", -3), ("seq_len", 2.0), ("seq_len", None),
    ("max_steps", 0), ("max_steps", -1), ("max_steps", 1e3), ("max_steps", 2**40),
    ("learning_rate", 0), ("learning_rate", -1e-3), ("learning_rate", nan), ("learning_rate", inf),
    ("learning_rate", "0.1"), ("learning_rate", None), ("learning_rate", True), ("learning_rate", 1j),
    ("learning_rate", 1e-40), ("learning_rate", 1e-50), ("grad_clip", 1e-50),  # 0 in float32: no step would move
    ("warmup_steps", -1), ("warmup_steps", 0.5), ("warmup_steps", None),
    ("weight_decay", -0.1), ("weight_decay", nan), ("weight_decay", inf), ("weight_decay", "0"), ("weight_decay", None),
    ("grad_clip", -1), ("grad_clip", nan), ("grad_clip", inf), ("grad_clip", None),
    ("data", "file"), ("data", ["stream"]), ("data", None),
    ("corpus_sequences", 0), ("corpus_sequences", -1),
    ("corpus_seed", -1), ("corpus_seed", 2**64), ("corpus_seed", 0.5),
    ("eval_sequences", 1), ("eval_sequences", 0), ("eval_sequences", -1), ("eval_sequences", 2.5),
    ("eval_seed", -1), ("eval_seed", 2**64), ("eval_seed", "x"),
    ("eval_every", 0), ("eval_every", -1), ("eval_every", None),
    ("eval_positions", 0), ("eval_positions", 1.5),
    ("checkpoint_every", 0), ("checkpoint_every", -1),
    ("mask_rate", 0), ("mask_rate", 1.5), ("mask_rate", -0.1), ("mask_rate", nan), ("mask_rate", "0.1"),
    ("mask_rate", None),
    ("corruption", (nan, 0.5, 0.5)), ("corruption", (0.5, 0.5, 0.5)), ("corruption", (0.5, 0.5)),
    ("corruption", (1.0, 0, 0, 0)), ("corruption", (-0.1, 0.6, 0.5)), ("corruption", ("a", "b", "c")),
    ("corruption", None), ("corruption", 0.8), ("corruption", (inf, 0, 0)), ("corruption", "abc"),
]


@pytest.mark.parametrize("field, value", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v in BAD_FIELDS])
def test_a_bad_train_config_field_is_a_config_error_naming_it(field, value):
    with pytest.raises(ConfigError, match=f"^{field}"):
        TrainConfig(**{field: value})


def test_a_corpus_smaller_than_a_batch_is_refused():
    with pytest.raises(ConfigError, match="corpus_sequences"):
        TrainConfig(data="corpus", corpus_sequences=4, batch_size=8)


def test_a_held_out_set_drawn_as_the_corpus_is_refused():
    """Both are world.sample(seed, n, seq_len): equal seeds made the 'held-out' ε the training corpus's (and a
    smaller set under the corpus's seed its first sequences).  A streaming run draws no corpus."""
    with pytest.raises(ConfigError, match="^eval_seed: equals corpus_seed = 7"):
        TrainConfig(data="corpus", corpus_seed=7, eval_seed=7)
    TrainConfig(data="stream", corpus_seed=7, eval_seed=7)


@pytest.mark.parametrize("d, words", [(None, "config"), ([1], "config"), ({"bogus": 1}, "bogus"),
                                      ({"targets": "x"}, "targets"), ({"seeds": [[0]]}, "seeds")])
def test_from_dict_refuses_what_is_not_a_train_config(d, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig.from_dict(d)


@pytest.mark.parametrize("make, words", [
    (lambda: TransformerConfig(n_symbols=4, d_modle=8),
     r"^d_modle: not a field of TransformerConfig \(did you mean 'd_model'"),
    (lambda: TransformerConfig(d_model=8), r"^n_symbols: TransformerConfig needs it"),
    (lambda: TransformerConfig(4, n_symbols=4), r"^n_symbols: given twice to TransformerConfig"),
    (lambda: TransformerConfig(*range(1, 15)), r"^TransformerConfig: takes at most 13 positional values"),
    (lambda: TrainConfig(bogus=1), r"^bogus: not a field of TrainConfig; its fields are \['objective'"),
    (lambda: TrainConfig(learnig_rate=0.1),
     r"^learnig_rate: not a field of TrainConfig \(did you mean 'learning_rate'"),
])
def test_a_misspelt_missing_or_surplus_config_argument_is_a_config_error_naming_it(make, words):
    """The dataclasses' generated constructors raised Python's TypeError ("__init__() got an unexpected keyword
    argument 'd_modle'"), which ``except ValueError`` does not catch."""
    with pytest.raises(ConfigError, match=words):
        make()


def test_a_config_survives_its_json_round_trip():
    config = TrainConfig(targets=[0.01, np.float32(0.5), 0.1], seeds=np.array([3, 1]), batch_size=np.int64(4))
    assert config.targets == (0.5, 0.1, 0.01) and config.seeds == (3, 1)  # ladder order; seeds kept in order
    assert all(type(x) is float for x in config.targets) and all(type(s) is int for s in config.seeds)
    assert type(config.batch_size) is int
    assert TrainConfig.from_dict(config.to_dict()) == config


# ---- hypothesis: any value in any field is either refused by name or stored sane -------------------
INT_FIELDS = {"batch_size": 1, "seq_len": 1, "max_steps": 1, "corpus_sequences": 1, "eval_every": 1,
              "eval_positions": 1, "checkpoint_every": 1, "eval_sequences": 2, "warmup_steps": 0, "corpus_seed": 0,
              "eval_seed": 0}
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=3),
    st.complex_numbers(max_magnitude=10), st.lists(st.floats(-2, 2), max_size=4),
    st.lists(st.integers(-3, 3), max_size=4).map(tuple), st.lists(st.lists(st.floats(0, 1), max_size=2), max_size=2),
)


def assert_sane(c: TrainConfig):
    assert c.objective in OBJECTIVES and c.data in ("stream", "corpus")
    for name, minimum in INT_FIELDS.items():
        v = getattr(c, name)
        assert type(v) is int and minimum <= v, (name, v)
    assert c.targets and list(c.targets) == sorted(c.targets, reverse=True)
    assert all(type(t) is float and np.finfo(np.float32).tiny <= t < inf for t in c.targets)
    assert len({f"{t:g}" for t in c.targets}) == len(c.targets)
    assert c.seeds and all(type(s) is int and 0 <= s < 2**63 for s in c.seeds) and len(set(c.seeds)) == len(c.seeds)
    assert type(c.learning_rate) is float and 0 < c.learning_rate < inf
    for name in ("weight_decay", "grad_clip"):
        assert type(getattr(c, name)) is float and 0 <= getattr(c, name) < inf
    assert type(c.mask_rate) is float and 0 < c.mask_rate <= 1
    assert len(c.corruption) == 3 and all(0 <= p < inf for p in c.corruption) and math.isclose(sum(c.corruption), 1)


@given(field=st.sampled_from([f for f in TrainConfig.__dataclass_fields__]), value=JUNK)
def test_any_value_in_any_field_is_refused_by_name_or_stored_sane(field, value):
    try:
        config = TrainConfig(**{field: value})
    except ConfigError as err:
        assert str(err).startswith(field), err
    else:
        assert_sane(config)


@given(targets=st.lists(st.floats(), max_size=5), seeds=st.lists(st.integers(-2, 2**64), max_size=4),
       corruption=st.lists(st.floats(-1, 2), min_size=3, max_size=3))
def test_any_ladder_seeds_and_corruption_are_refused_by_name_or_stored_sane(targets, seeds, corruption):
    try:
        config = TrainConfig(targets=targets, seeds=seeds, corruption=corruption)
    except ConfigError as err:
        assert str(err).split(":")[0] in ("targets", "seeds", "corruption"), err
    else:
        assert_sane(config)


# ---- train(): every argument checked before any compile and before the run directory is claimed -------
@pytest.fixture
def no_compile(monkeypatch):
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))


BAD_CALLS = [
    ("world None", dict(world=None), ConfigError, "world"),
    ("world str", dict(world="hmm"), ConfigError, "world"),
    ("world dict", dict(world={}), ConfigError, "world"),
    ("model_config None", dict(model_config=None), ConfigError, "model_config"),
    ("model_config dict", dict(model_config=MODEL.to_dict()), ConfigError, "model_config"),
    ("model_config TrainConfig", dict(model_config=CONFIG), ConfigError, "model_config"),
    ("config dict", dict(config=CONFIG.to_dict()), ConfigError, "config: expected a TrainConfig.*from_dict"),
    ("config None", dict(config=None), ConfigError, "config"),
    ("config TransformerConfig", dict(config=MODEL), ConfigError, "config"),
    ("run_dir int", dict(run_dir=3), ConfigError, "run_dir"),
    ("until_step 0", dict(until_step=0), ConfigError, "until_step"),
    ("until_step -1", dict(until_step=-1), ConfigError, "until_step"),
    ("until_step float", dict(until_step=1.5), ConfigError, "until_step"),
    ("until_step bool", dict(until_step=True), ConfigError, "until_step"),
    ("progress str", dict(progress="yes"), ConfigError, "progress"),
    ("progress None", dict(progress=None), ConfigError, "progress"),
    ("n_symbols", dict(model_config=TransformerConfig(**{**MODEL.to_dict(), "n_symbols": 5})), ShapeError, "n_symbols"),
    ("max_len < seq_len", dict(model_config=TransformerConfig(**{**MODEL.to_dict(), "max_len": 4})), ConfigError,
     "seq_len: 8 is longer than the model's max_len = 4"),
    ("masked on causal", dict(config=TrainConfig(**{**CONFIG.to_dict(), "objective": "masked-lm"})), ConfigError,
     "objective"),
    ("causal on bidirectional", dict(model_config=TransformerConfig(**{**MODEL.to_dict(), "causal": False})),
     ConfigError, "objective"),
    ("batch too big", dict(config=TrainConfig(**{**CONFIG.to_dict(), "batch_size": 2**30})), ConfigError,
     "batch_size: this request needs"),
    ("eval too big", dict(config=TrainConfig(**{**CONFIG.to_dict(), "eval_sequences": 2**31 - 1})), ConfigError,
     "eval_sequences: this request needs"),
    ("corpus too big", dict(config=TrainConfig(**{**CONFIG.to_dict(), "data": "corpus", "corpus_sequences": 2**31 - 1})),
     ConfigError, "corpus_sequences: this request needs"),
]


@pytest.mark.parametrize("label, change, error, words", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_train_arguments_raise_before_compiling_or_claiming(no_compile, tmp_path, label, change, error, words):
    args = {"world": WORLD, "model_config": MODEL, "config": CONFIG, "run_dir": tmp_path / "run", **change}
    with pytest.raises(error, match=words):
        train(args.pop("world"), args.pop("model_config"), args.pop("config"), args.pop("run_dir"),
              progress=args.pop("progress", False), **args)
    assert not (tmp_path / "run").exists()  # nothing claimed


def test_a_run_dir_that_is_a_file_is_refused(no_compile, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="run_dir: .* is a file"):
        train(WORLD, MODEL, CONFIG, tmp_path / "f", progress=False)
    with pytest.raises(ConfigError, match="run_dir: cannot write"):
        train(WORLD, MODEL, CONFIG, tmp_path / "f" / "x", progress=False)
    assert (tmp_path / "f").read_text() == "x"


def test_an_unwritable_run_dir_is_refused(no_compile, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere a mode bit forbids: use a read-only filesystem instead
        target = Path("/sys/simlm-run")
        if not Path("/sys").is_dir():
            pytest.skip("no read-only filesystem to write to")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "run"
    with pytest.raises(ConfigError, match="run_dir: cannot write"):
        train(WORLD, MODEL, CONFIG, target, progress=False)


@pytest.mark.parametrize("directory", ["missing", "file", None, 3])
def test_load_lm_on_what_is_not_a_checkpoint_names_it(tmp_path, directory):
    if directory == "file":
        (tmp_path / "file").write_text("x")
    where = tmp_path / directory if isinstance(directory, str) else directory
    with pytest.raises(ConfigError, match="directory" if not isinstance(directory, str) else directory):
        load_lm(where)


def test_train_result_lm_names_a_bad_target_or_seed():
    from simlm.train import TrainResult
    from simlm.train.trainer import LadderRecord
    result = TrainResult(Path("."), [LadderRecord(0, 0.1, False)], {0: 1.0}, 0, [])
    for kwargs, words in [({"target": "x"}, "target"), ({"target": nan}, "target"), ({"target": 0.1, "seed": 7}, "seed"),
                          ({"target": 0.1, "seed": True}, "seed"), ({"target": 0.1}, "no checkpoint")]:
        with pytest.raises(ConfigError, match=words):
            result.lm(**kwargs)


def test_load_lm_names_a_checkpoint_with_an_invalid_model_config(tmp_path):
    (tmp_path / "metadata.json").write_text('{"model_config": {"n_symbols": -1}}')
    with pytest.raises(ConfigError, match=f"checkpoint: {tmp_path / 'metadata.json'} has an invalid model_config"):
        load_lm(tmp_path)


def _saved_model(directory, **metadata):
    from flax import nnx
    from simlm.models.transformer import init_transformer
    from simlm.train.checkpoint import save_model
    save_model(directory, nnx.state(init_transformer(MODEL, 0), nnx.Param),
               {"model_config": MODEL.to_dict(), **metadata})


def test_load_lm_expects_configs_as_the_run_holds_them_tuples_and_all(tmp_path):
    """expect= takes a config's to_dict() as it is (tuples in memory, lists on disk), and still refuses another."""
    _saved_model(tmp_path / "ck", train_config=CONFIG.to_dict())
    assert load_lm(tmp_path / "ck", expect={"train_config": CONFIG.to_dict(), "model_config": MODEL.to_dict()})
    other = {**CONFIG.to_dict(), "targets": (0.5,)}
    with pytest.raises(ConfigError, match=r"saved by a different run \(differs in \['train_config\.targets'\]\)"):
        load_lm(tmp_path / "ck", expect={"train_config": other})
    with pytest.raises(ConfigError, match=r"^expect: entry 'model_config' cannot be compared"):
        load_lm(tmp_path / "ck", expect={"model_config": MODEL})  # the config itself, not its to_dict()


def test_a_checkpoint_whose_config_disagrees_with_its_arrays_is_one_named_error_and_no_noise(tmp_path, capfd):
    import json
    _saved_model(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "metadata.json").read_text())
    meta["model_config"]["d_model"] = 2 * meta["model_config"]["d_model"]
    (tmp_path / "ck" / "metadata.json").write_text(json.dumps(meta))
    capfd.readouterr()
    with pytest.raises(ConfigError, match=r"holds other arrays than its config says \(params/"):
        load_lm(tmp_path / "ck")
    assert "Traceback" not in capfd.readouterr().err


def test_restore_tree_refuses_numpy_leaves_of_another_shape(tmp_path):
    from simlm.train.checkpoint import restore_tree, save_tree
    save_tree(tmp_path / "ck", {"a": np.ones((2, 3), np.float32)}, {})
    np.testing.assert_array_equal(restore_tree(tmp_path / "ck", {"a": np.zeros((2, 3), np.float32)})["a"], 1)
    for shape, dtype in [((3, 2), np.float32), ((6,), np.float32), ((2, 3), np.float16)]:
        with pytest.raises(ConfigError, match=r"holds other arrays than its config says \(a: saved \(2, 3\) float32"):
            restore_tree(tmp_path / "ck", {"a": np.zeros(shape, dtype)})


def test_save_tree_takes_jax_values_in_metadata_and_refuses_what_json_cannot_hold_before_writing(tmp_path):
    import json
    from simlm.train.checkpoint import save_tree
    save_tree(tmp_path / "ck", {"a": np.ones(2)}, {"epsilon": jax.numpy.float32(0.25), "v": jax.numpy.arange(2)})
    assert {"epsilon": 0.25, "v": [0, 1]}.items() <= json.loads((tmp_path / "ck" / "metadata.json").read_text()).items()
    # (keys of mixed types, {0: …, "mean": …}, are written as JSON writes them since 2026-12-05: "0", "mean")
    for bad in ({"when": object()}, {"per_seed": {(0, 1): 0.1}}):  # a tuple key: no JSON object key
        with pytest.raises(ConfigError, match="^metadata: cannot be written as JSON"):
            save_tree(tmp_path / "new", {"a": np.ones(2)}, bad)
        assert not (tmp_path / "new").exists()


def test_a_save_refused_midway_leaves_the_former_checkpoint_as_it_was(tmp_path):
    """save_tree removed the old checkpoint before Orbax refused the new tree (a zero-size leaf): the old
    one was lost, and Orbax's raw ValueError came out.  Now the refusal is a ConfigError naming the leaf,
    and any save is made beside the old one and moved into place only once complete."""
    from simlm.train.checkpoint import restore_tree, save_tree
    save_tree(tmp_path / "ck", {"x": np.ones(3, np.float32)}, {"n": 1})
    with pytest.raises(ConfigError, match=r"tree: Orbax cannot save arrays of zero size, e.g. the leaf \['e'\]"):
        save_tree(tmp_path / "ck", {"x": np.zeros(3, np.float32), "e": np.zeros((0,), np.float32)}, {"n": 2})
    np.testing.assert_array_equal(restore_tree(tmp_path / "ck", {"x": np.zeros(3, np.float32)})["x"], 1)
    save_tree(tmp_path / "ck", {"x": np.full(3, 2, np.float32)}, {"n": 3})
    np.testing.assert_array_equal(restore_tree(tmp_path / "ck", {"x": np.zeros(3, np.float32)})["x"], 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_the_checksum_covers_dtypes_so_equal_bytes_of_another_dtype_differ():
    """Three zeros as float32 and as int32 have the same 12 bytes and shape; the checksum (shapes, dtypes
    and bytes) tells them apart, so arrays of another dtype with the same bytes never pass for the saved ones."""
    assert checksum({"w": np.zeros(3, np.float32)}) != checksum({"w": np.zeros(3, np.int32)})


def test_the_checksum_of_a_fixed_tree_is_unchanged_so_stored_checkpoints_stay_readable():
    """SHA-256 over each leaf, in leaf order, of str((shape, dtype.str)) then its bytes — the value every
    saved metadata.json holds; a different formula would refuse every stored checkpoint."""
    tree = {"b": np.array([[1, 2]], np.int32), "a": np.arange(3, dtype=np.float32)}  # leaves in key order: a, b
    assert checksum(tree) == "bfeb98f4fcaf3397938216f865b36f980cc52789d8f2b0e77ab23dfdefbd0989"


class _Unnormalised(HMM):
    """An HMM whose next-token laws are shifted by 0.01 nats: no probability laws (Σ p = 1.01)."""

    def next_token_logprobs(self, tokens):
        return super().next_token_logprobs(tokens) + 0.01


def test_a_world_whose_laws_are_not_laws_is_refused_naming_it():
    """The trainer checks the world's reference laws as exact_epsilon does, instead of recording an ε
    0.01 nats off."""
    world = _Unnormalised(WORLD.initial, WORLD.transition, WORLD.emission)
    with pytest.raises(DistributionError, match=r"^world: next_token_logprobs at sequence 0, position 0 "
                                                r"\(next-token law\) is not a probability law"):
        Training(world, MODEL, CONFIG)


@pytest.mark.parametrize("objective, causal, bad", [("cross_entropy", True, 4), ("quad", True, 5),
                                                    ("masked_lm", False, 9), ("masked_lm", False, -1)])
def test_an_objective_refuses_a_counted_target_that_is_no_symbol(objective, causal, bad):
    """A MASK or pad id (or, for the masked LM, any id: its input is replaced by MASK before the model's check)
    at a position that counts was scored as symbol 0 — a loss, no error (a review, 2026-12-06).  Masked out, the
    same id adds nothing, as the module says."""
    import jax.numpy as jnp
    from simlm.errors import TokenError
    from simlm.models.transformer import init_transformer
    from simlm.train import objectives

    model = init_transformer(TransformerConfig(n_symbols=4, d_model=8, n_layers=1, n_heads=1, max_len=8,
                                               causal=causal), 0)
    fn = getattr(objectives, objective)
    kwargs = {"mask_rate": 1.0} if objective == "masked_lm" else {}
    y = jnp.array([[0, 1, 2, bad, 0, 1, 2, 3]])
    with pytest.raises(TokenError, match=rf"^tokens: the target at \(0, 3\) is {bad}, not a symbol id in \[0, 4\)"):
        fn(model, y, jax.random.PRNGKey(0), **kwargs)
    if causal:  # a MASK or pad id is a valid input; masked out, it adds nothing
        keep = jnp.arange(8)[None, :] != 3
        assert math.isfinite(float(fn(model, y, jax.random.PRNGKey(0), mask=keep, **kwargs)))


@pytest.mark.parametrize("complete_new", [True, False])
def test_a_save_killed_between_its_two_renames_loses_no_checkpoint(complete_new, tmp_path, monkeypatch):
    """Over an existing checkpoint a save renames it to <name>.replaced, then its complete <name>.saving into
    place: killed between the two, nothing was at the path and the checkpoint read as missing, both copies
    beside it unread (a review, 2026-12-06).  The next read puts the new save in place (the former one where
    the new one is incomplete); the next save too."""
    import simlm.train.checkpoint as ckpt
    from simlm.train.checkpoint import read_metadata, restore_tree, save_tree

    path = tmp_path / "ck"
    save_tree(path, {"a": np.arange(3.0, dtype=np.float32)}, {"v": 1})
    real, calls = os.replace, []

    def killed(a, b):
        calls.append(a)
        if len(calls) == 3:  # the first is metadata.json's own atomic write, the second moves the former aside
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(ckpt.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_tree(path, {"a": np.arange(3.0, dtype=np.float32) + 1}, {"v": 2})
    monkeypatch.undo()
    assert not path.exists() and (tmp_path / "ck.replaced").is_dir() and (tmp_path / "ck.saving").is_dir()
    if not complete_new:
        (tmp_path / "ck.saving" / "metadata.json").unlink()
    assert read_metadata(path)["v"] == (2 if complete_new else 1)
    got = restore_tree(path, {"a": np.zeros(3, np.float32)})["a"]
    np.testing.assert_array_equal(got, np.arange(3.0) + (1 if complete_new else 0))
    save_tree(path, {"a": np.zeros(3, np.float32)}, {"v": 3})
    assert read_metadata(path)["v"] == 3
    # a lone .saving (a first save killed before its rename, or another process's save) is not taken for one
    import shutil

    shutil.copytree(path, tmp_path / "other.saving")
    with pytest.raises(ConfigError, match="has no metadata.json"):
        read_metadata(tmp_path / "other")


def test_a_model_config_edited_beside_arrays_of_the_same_shapes_is_refused_and_older_checkpoints_still_load(tmp_path):
    """n_heads, causal or the dtype edited in metadata.json left every array's shape as it was, so the same
    arrays loaded as another model without a word (a review, 2026-12-06): the checksum covers model_config."""
    import json
    from simlm.train.checkpoint import checksum, restore_tree
    _saved_model(tmp_path / "ck")
    path = tmp_path / "ck" / "metadata.json"
    saved = json.loads(path.read_text())
    for key, value in [("n_heads", 2), ("causal", False), ("dtype", "bfloat16")]:
        assert saved["model_config"][key] != value
        path.write_text(json.dumps({**saved, "model_config": {**saved["model_config"], key: value}}))
        with pytest.raises(ConfigError, match="does not hold the arrays saved there with its model_config"):
            load_lm(tmp_path / "ck")
    path.write_text(json.dumps(saved))
    from flax import nnx
    from simlm.models.transformer import init_transformer
    tree = restore_tree(tmp_path / "ck", {"params": nnx.to_pure_dict(nnx.state(init_transformer(MODEL, 0), nnx.Param))})
    path.write_text(json.dumps({**saved, "checksum": checksum(tree)}))  # as saved before 2026-12-06: arrays only
    assert load_lm(tmp_path / "ck").metadata["checksum"] == checksum(tree)


def test_an_empty_run_dir_a_dict_for_a_config_and_a_list_for_expect_are_named(tmp_path, monkeypatch):
    """``run_dir=""`` trained into the working directory (Path('') is '.': its config.json, checkpoints and lock
    landed there without a word); ``masked_eval_positions`` of a dict and ``load_lm(expect=[…])`` were
    AttributeErrors (a review, 2026-12-08).  Each is a ConfigError naming the argument, before anything runs."""
    from simlm.train import masked_eval_positions

    monkeypatch.chdir(tmp_path)
    world = HMM.random(0, 2, 3)
    model = TransformerConfig(n_symbols=3, d_model=8, n_layers=1, n_heads=2, max_len=8)
    for blank in ("", "  "):
        with pytest.raises(ConfigError, match="^run_dir: expected a directory path or None, got an empty path"):
            train(world, model, TrainConfig(targets=(0.05,), batch_size=4, seq_len=8, max_steps=2), run_dir=blank,
                  progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="^config: expected a TrainConfig, got dict"):
        masked_eval_positions({"seq_len": 8, "eval_positions": 4})
    with pytest.raises(ConfigError, match="^expect: expected a mapping of metadata entries"):
        load_lm(tmp_path, expect=[("seed", 0)])
    from types import MappingProxyType
    with pytest.raises(ConfigError, match="^checkpoint: "):  # a read-only mapping is a mapping: on to the directory
        load_lm(tmp_path, expect=MappingProxyType({"seed": 0}))


@pytest.mark.parametrize("options", [dict(corruption=(2, 1, 1)), dict(corruption=(1.2, -0.1, -0.1)),
                                     dict(corruption=(math.nan, 0.5, 0.5)), dict(corruption=(0.5, 0.5)),
                                     dict(corruption="mask"), dict(mask_rate=0.0), dict(mask_rate=math.nan),
                                     dict(mask_rate=1.5), dict(mask_rate="0.15")])
def test_the_masked_lm_objective_called_directly_refuses_bad_masking(options):
    """``objectives.masked_lm`` called directly (the trainer's config checks these): corruption (2, 1, 1) read as
    (½, ¼, ¼), (1.2, −0.1, −0.1) and NaN gave a finite loss, a pair a JAX shape error, mask_rate NaN "the draw
    chose no position" (a review, 2026-12-08).  Each is a ConfigError naming the option; list tokens are read."""
    from simlm.models.transformer import init_transformer
    from simlm.train import objectives

    model = init_transformer(TransformerConfig(n_symbols=5, d_model=8, n_layers=1, n_heads=2, max_len=8,
                                               causal=False), 0)
    x = np.random.default_rng(0).integers(0, 5, (3, 6)).tolist()
    name = next(iter(options))
    with pytest.raises(ConfigError, match=f"^{name}: expected"):
        objectives.masked_lm(model, x, jax.random.key(0), **options)
    assert np.isfinite(float(objectives.masked_lm(model, x, jax.random.key(0))))
    assert np.isfinite(float(objectives.masked_lm(model, x, jax.random.key(0), mask_rate=np.float32(0.5))))
    wide = np.asarray(x, np.int64)
    wide[0, 0] = 2**32 + 1  # wraps to 1 in int32: checked before the cast (a review caught the order)
    with pytest.raises(TokenError, match="^tokens"):
        objectives.masked_lm(model, wide, jax.random.key(0), mask_rate=1.0)
    with pytest.raises(ConfigError, match=r"^key: expected a JAX PRNG key \(jax.random.key\(seed\)\), got int 0"):
        objectives.masked_lm(model, x, 0)  # was JAX's TypeError about "invalid PRNG key data"
