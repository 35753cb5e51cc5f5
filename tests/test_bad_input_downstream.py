"""Bad input to the downstream layer (tasks, heads, prompt tuning): a typed simlm error naming the argument,
raised on the host before anything is compiled or allocated — never an AttributeError from deep inside, a
MemoryError, or an option silently ignored."""

import warnings

import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import simlm.downstream as ds
from simlm.errors import ConfigError, NotConvergedWarning, ShapeError, SimlmError, TokenError, TrainingDivergedError
from simlm.models import TransformerConfig, WorldLM
from simlm.models.transformer import Transformer, TransformerLM
from simlm.worlds import HMM, LogLinearWorld, MemoryHMM

H = HMM.random(0, 3, 4, family="permutation-mixture", transition_temp=0.5, emission_temp=0.5)
M = MemoryHMM.random(0, 1, 2, 2, 4, transition_temp=0.5, emission_temp=0.5)
TASK = ds.PosteriorTask(mu=np.array([1.0, -1.0, 0.5]))
MTASK = ds.MemoryTask(L=np.array([[1.0, 0.0], [0.0, 1.0]]))
X = np.asarray(H.sample(1, 16, 6))
Y = np.arange(16) % 2
XM = np.asarray(M.sample(1, 16, 6))
F = np.random.default_rng(0).random((16, 4))
FA = np.random.default_rng(0).random((16, 6, 4))
LM = WorldLM(H)
MASKED = TransformerLM(Transformer(TransformerConfig(n_symbols=4, d_model=8, n_layers=1, n_heads=2, max_len=8,
                                                     causal=False), rngs=nnx.Rngs(0)))
CAUSAL = TransformerLM(Transformer(TransformerConfig(n_symbols=4, d_model=8, n_layers=1, n_heads=2, max_len=8),
                                   rngs=nnx.Rngs(0)))
HUGE = 10**13

CASES = [
    # features
    ("task_features(None)", lambda: ds.task_features(None, X, "prepended"), ConfigError, "lm"),
    ("task_features(str)", lambda: ds.task_features("lm", X, "prepended"), ConfigError, "lm"),
    ("task_features(dict)", lambda: ds.task_features({}, X, "prepended"), ConfigError, "lm"),
    ("task_features(world)", lambda: ds.task_features(H, X, "prepended"), ConfigError, "lm"),
    ("task_features position", lambda: ds.task_features(LM, X, "sideways"), ConfigError, "position"),
    ("task_features position array", lambda: ds.task_features(LM, X, np.zeros(0)), ConfigError, "position"),
    ("task_features log", lambda: ds.task_features(LM, X, "prepended", log="yes"), ConfigError, "log"),
    ("task_features tokens ≥ V", lambda: ds.task_features(LM, X + 4, "prepended"), TokenError, "tokens"),
    ("task_features tokens float", lambda: ds.task_features(LM, X + 0.5, "prepended"), TokenError, "tokens"),
    ("task_features tokens too long", lambda: ds.task_features(MASKED, np.zeros((2, 20), int), "prepended"),
     TokenError, "tokens"),
    ("attention_features(None)", lambda: ds.attention_features(None, XM), ConfigError, "lm"),
    ("attention_features log", lambda: ds.attention_features(WorldLM(M), XM, log=None), ConfigError, "log"),
    # the linear head
    ("linear features None", lambda: ds.fit_linear_head(None, Y), ConfigError, "features"),
    ("linear features str", lambda: ds.fit_linear_head("abc", Y), ConfigError, "features"),
    ("linear features complex", lambda: ds.fit_linear_head(F + 1j, Y), ConfigError, "features"),
    ("linear features NaN", lambda: ds.fit_linear_head(np.full_like(F, np.nan), Y), ConfigError, "features"),
    ("linear features 1e300", lambda: ds.fit_linear_head(F * 1e300, Y), ConfigError, "features"),
    ("linear features 3-d", lambda: ds.fit_linear_head(FA, Y), ShapeError, "features"),
    ("linear features empty", lambda: ds.fit_linear_head(np.zeros((0, 4)), Y[:0]), ShapeError, "features"),
    ("labels 2", lambda: ds.fit_linear_head(F, np.full(16, 2)), ConfigError, "labels"),
    ("labels -1", lambda: ds.fit_linear_head(F, -np.ones(16, int)), ConfigError, "labels"),
    ("labels 0.5", lambda: ds.fit_linear_head(F, np.full(16, 0.5)), ConfigError, "labels"),
    ("labels str", lambda: ds.fit_linear_head(F, np.array(["a"] * 16)), ConfigError, "labels"),
    ("labels None", lambda: ds.fit_linear_head(F, None), ShapeError, "labels"),
    ("labels short", lambda: ds.fit_linear_head(F, Y[:3]), ShapeError, "labels"),
    ("n_classes 1", lambda: ds.fit_linear_head(F, Y, n_classes=1), ConfigError, "n_classes"),
    ("method list", lambda: ds.fit_linear_head(F, Y, method=["adam"]), ConfigError, "method"),
    # 0 and inf in float32, where the fits compute: the unpenalised fit without its warning, the random start
    ("l2 1e-50", lambda: ds.fit_linear_head(F, Y, l2=1e-50), ConfigError, "^l2: 1e-50 is below float32's smallest"),
    ("l2 1e39", lambda: ds.fit_linear_head(F, Y, l2=1e39), ConfigError, "^l2: 1e.39 is above float32's largest"),
    ("attention l2 1e39", lambda: ds.fit_attention_head(FA, Y, l2=1e39), ConfigError, "^l2: 1e.39 is above"),
    ("tol 1e50", lambda: ds.fit_linear_head(F, Y, tol=1e50), ConfigError, "^tol: 1e.50 is above float32's largest"),
    ("adam lr 1e30", lambda: ds.fit_linear_head(F, Y, method="adam", lr=1e30, steps=20), TrainingDivergedError,
     r"^lr: fit_linear_head \(adam\) ended at a non-finite loss"),
    ("method sgd", lambda: ds.fit_linear_head(F, Y, method="sgd"), ConfigError, "method"),
    ("steps 0", lambda: ds.fit_linear_head(F, Y, steps=0), ConfigError, "steps"),
    ("steps 2.5", lambda: ds.fit_linear_head(F, Y, steps=2.5), ConfigError, "steps"),
    ("steps huge", lambda: ds.fit_linear_head(F, Y, steps=HUGE), ConfigError, "steps"),
    ("lr -1", lambda: ds.fit_linear_head(F, Y, lr=-1.0), ConfigError, r"\blr\b"),
    ("lr None", lambda: ds.fit_linear_head(F, Y, lr=None), ConfigError, r"\blr\b"),
    ("tol 0", lambda: ds.fit_linear_head(F, Y, tol=0.0), ConfigError, r"\btol\b"),
    ("tol nan", lambda: ds.fit_linear_head(F, Y, tol=float("nan")), ConfigError, r"\btol\b"),
    ("l2 nan", lambda: ds.fit_linear_head(F, Y, l2=float("nan")), ConfigError, "l2"),
    ("l2 empty array", lambda: ds.fit_linear_head(F, Y, l2=np.zeros(0)), ConfigError, "l2"),
    ("seed -1", lambda: ds.fit_linear_head(F, Y, seed=-1), ConfigError, "seed"),
    ("predict 1-d", lambda: ds.LinearHead(np.zeros((4, 2)), np.zeros(2), np.zeros(4), np.ones(4), np.zeros(1))
     .predict(F[0]), ShapeError, "features"),
    # the attention head
    ("attention features 2-d", lambda: ds.fit_attention_head(F, Y), ShapeError, "features"),
    ("attention d_key 0", lambda: ds.fit_attention_head(FA, Y, d_key=0), ConfigError, "d_key"),
    ("attention n_restarts huge", lambda: ds.fit_attention_head(FA, Y, n_restarts=HUGE), ConfigError, "n_restarts"),
    ("attention d_value huge", lambda: ds.fit_attention_head(FA, Y, d_value=HUGE), ConfigError, "d_value"),
    ("attention lr inf", lambda: ds.fit_attention_head(FA, Y, lr=float("inf")), ConfigError, r"\blr\b"),
    # tasks
    ("PosteriorTask mu str", lambda: ds.PosteriorTask(mu="abc"), ConfigError, "mu"),
    ("PosteriorTask mu complex", lambda: ds.PosteriorTask(mu=[1j, 1.0]), ConfigError, "mu"),
    ("PosteriorTask L dict", lambda: ds.PosteriorTask(L={"a": 1}), ConfigError, r"\bL\b"),
    ("PosteriorTask L NaN", lambda: ds.PosteriorTask(L=np.full((2, 3), np.nan)), ConfigError, r"\bL\b"),
    ("PosteriorTask neither", lambda: ds.PosteriorTask(), ConfigError, r"\bL\b"),
    ("PosteriorTask position", lambda: ds.PosteriorTask(mu=np.ones(3), position=np.zeros(0)), ConfigError,
     "position"),
    ("MemoryTask cell -1", lambda: ds.MemoryTask(mu=np.ones(2), cell=-1), ConfigError, "cell"),
    ("labels_from_posterior None", lambda: TASK.labels_from_posterior(None), SimlmError, "posterior"),
    ("labels_from_posterior K", lambda: TASK.labels_from_posterior(np.ones((2, 5)) / 5), ShapeError, "posterior"),
    ("labels world None", lambda: TASK.labels(None, X), ConfigError, "world"),
    ("labels world K", lambda: TASK.labels(HMM.random(0, 5, 4), X), ShapeError, "world"),
    ("memory cell ≥ n_cells", lambda: ds.MemoryTask(mu=np.ones(2), cell=3).labels(M, XM), ConfigError, "cell"),
    ("sparse n_states huge", lambda: ds.sparse_direction(0, HUGE), ConfigError, "n_states"),
    ("sparse nnz huge", lambda: ds.sparse_direction(0, 3, HUGE), ConfigError, "nnz"),
    ("sparse n_classes huge", lambda: ds.sparse_label_matrix(0, HUGE, 3), ConfigError, "n_classes"),
    ("sparse n_classes 1", lambda: ds.sparse_label_matrix(0, 1, 3), ConfigError, "n_classes"),
    ("sparse seed str", lambda: ds.sparse_direction("0", 3), ConfigError, "seed"),
    ("make_posterior_task world None", lambda: ds.make_posterior_task(None, 0), ConfigError, "world"),
    ("make_posterior_task MemoryHMM", lambda: ds.make_posterior_task(M, 0), ConfigError, "world"),
    ("make_posterior_task position", lambda: ds.make_posterior_task(H, 0, position=["next"]), ConfigError,
     "position"),
    ("make_posterior_task fraction None", lambda: ds.make_posterior_task(H, 0, min_class_fraction=None, n_probe=8),
     ConfigError, "min_class_fraction"),
    ("make_posterior_task fraction 0.9", lambda: ds.make_posterior_task(H, 0, min_class_fraction=0.9, n_probe=8),
     ConfigError, "min_class_fraction"),
    ("make_posterior_task n_probe 0", lambda: ds.make_posterior_task(H, 0, n_probe=0), ConfigError, "n_probe"),
    ("make_memory_task HMM", lambda: ds.make_memory_task(H, 0), ConfigError, "world"),
    ("make_memory_task cell 5", lambda: ds.make_memory_task(M, 0, cell=5, n_probe=8), ConfigError, "cell"),
    # before the probe is sampled: a probe too large to sample would have failed first, naming n_probe
    ("make_memory_task cell 5 large probe", lambda: ds.make_memory_task(M, 0, cell=5, n_probe=2**31 - 1),
     ConfigError, "cell: 5"),
    ("sample_task_data world None", lambda: ds.sample_task_data(None, TASK, 0, 4, 4), ConfigError, "world"),
    ("sample_task_data task None", lambda: ds.sample_task_data(H, None, 0, 4, 4), ConfigError, "task"),
    ("sample_task_data task str", lambda: ds.sample_task_data(H, "task", 0, 4, 4), ConfigError, "task"),
    ("sample_task_data memory task on HMM", lambda: ds.sample_task_data(H, MTASK, 0, 4, 4), ConfigError, "world"),
    ("sample_task_data other K", lambda: ds.sample_task_data(HMM.random(0, 5, 4), TASK, 0, 4, 4), ShapeError,
     "world"),
    ("sample_task_data n 0", lambda: ds.sample_task_data(H, TASK, 0, 0, 4), ConfigError, r"\bn\b"),
    ("sample_task_data length -1", lambda: ds.sample_task_data(H, TASK, 0, 4, -1), ConfigError, "length"),
    # named as sample_task_data names them, not as the world.sample it calls ("key", "n_sequences, length")
    ("sample_task_data seed -1", lambda: ds.sample_task_data(H, TASK, -1, 4, 3), ConfigError, "^key_or_seed: "),
    ("sample_task_data huge", lambda: ds.sample_task_data(H, TASK, 0, 10**12, 3), ConfigError, "^n, length: "),
    ("continuations task str", lambda: ds.sample_continuations(H, X, 2, 0, task="x"), ConfigError, "task"),
    ("continuations huge", lambda: ds.sample_continuations(H, X, HUGE, 0), ConfigError, "n_new"),
    ("continuations key -1", lambda: ds.sample_continuations(H, X, 2, -1), ConfigError, "key"),
    ("ceiling task None", lambda: ds.bayes_ceiling(H, None, X, 3), ConfigError, "task"),
    ("ceiling world None", lambda: ds.bayes_ceiling(None, TASK, X, 3), ConfigError, "world"),
    ("ceiling memory task on HMM", lambda: ds.bayes_ceiling(H, MTASK, X, 3), ConfigError, "world"),
    ("ceiling visible_length True", lambda: ds.bayes_ceiling(H, TASK, X, True), ConfigError, "visible_length"),
    ("ceiling visible_length 99", lambda: ds.bayes_ceiling(H, TASK, X, 99), ConfigError, "visible_length"),
    ("ceiling n_continuations huge", lambda: ds.bayes_ceiling(H, TASK, X, 3, n_continuations=HUGE), ConfigError,
     "n_continuations"),
    ("ceiling tokens_full", lambda: ds.bayes_ceiling(H, TASK, "abc", 1), TokenError, "tokens_full"),
    ("ceiling one sequence", lambda: ds.bayes_ceiling(H, TASK, X[:1], 3, n_continuations=2), ConfigError,
     "tokens_full"),
    ("ceiling one sequence at T' = T", lambda: ds.bayes_ceiling(H, TASK, X[:1], 6), ConfigError, "tokens_full"),
    # head tuning
    ("head_tuning lm None", lambda: ds.head_tuning(None, H, TASK, (X, Y), (X, Y)), ConfigError, "lm"),
    ("head_tuning world None", lambda: ds.head_tuning(LM, None, TASK, (X, Y), (X, Y)), ConfigError, "world"),
    ("head_tuning world LogLinear", lambda: ds.head_tuning(LM, LogLinearWorld.random(0, 3, 4, 3), TASK, X, X),
     ConfigError, "world"),
    ("head_tuning task None", lambda: ds.head_tuning(LM, H, None, (X, Y), (X, Y)), ConfigError, "task"),
    ("head_tuning lm V", lambda: ds.head_tuning(WorldLM(HMM.random(0, 3, 5)), H, TASK, X, X), ShapeError, "lm"),
    ("head_tuning train triple", lambda: ds.head_tuning(LM, H, TASK, (X, Y, Y), (X, Y)), ConfigError, "train"),
    ("head_tuning test labels", lambda: ds.head_tuning(LM, H, TASK, (X, Y), (X, Y[:3])), ShapeError, "test labels"),
    ("head_tuning unknown option", lambda: ds.head_tuning(LM, H, TASK, X, X, bogus=1), ConfigError, "bogus"),
    ("head_tuning option of the other head", lambda: ds.head_tuning(LM, H, TASK, X, X, d_key=4), ConfigError,
     "d_key"),
    ("head_tuning visible_length 0", lambda: ds.head_tuning(LM, H, TASK, X, X, visible_length=0), ConfigError,
     "visible_length"),
    # T' = 5 fits the 6-token test set but not the 4-token training set, whose features would be cut short
    ("head_tuning visible_length above the train length", lambda: ds.head_tuning(LM, H, TASK, X[:, :4], X,
     visible_length=5), ConfigError, r"^visible_length: expected an integer in \[1, 4\]"),
    # prompt tuning
    ("exact prompt MemoryHMM", lambda: ds.fit_exact_prompt(M, XM, Y), ConfigError, "world"),
    ("exact prompt labels 2", lambda: ds.fit_exact_prompt(H, X, np.full(16, 2)), ConfigError, "labels"),
    ("exact prompt k 0", lambda: ds.fit_exact_prompt(H, X, Y, k=0), ConfigError, r"\bk\b"),
    ("exact prompt k huge", lambda: ds.fit_exact_prompt(H, X, Y, k=10**9), ConfigError, r"\bk\b"),
    ("exact prompt restarts huge", lambda: ds.fit_exact_prompt(H, X, Y, n_restarts=HUGE), ConfigError, "n_restarts"),
    ("exact prompt test int", lambda: ds.fit_exact_prompt(H, X, Y, test=5), ConfigError, "test"),
    ("exact prompt test 1-tuple", lambda: ds.fit_exact_prompt(H, X, Y, test=(X,)), ConfigError, "test"),
    ("exact prompt test labels", lambda: ds.fit_exact_prompt(H, X, Y, test=(X, Y[:3])), ShapeError, "test labels"),
    ("exact prompt test tokens", lambda: ds.fit_exact_prompt(H, X, Y, test=(X + 4, Y)), TokenError, "test tokens"),
    ("exact prompt l2 []", lambda: ds.fit_exact_prompt(H, X, Y, l2=[]), ConfigError, "l2"),
    ("exact prompt lr nan", lambda: ds.fit_exact_prompt(H, X, Y, lr=float("nan")), ConfigError, r"\blr\b"),
    ("transformer prompt lm None", lambda: ds.fit_transformer_prompt(None, X, Y), ConfigError, "lm"),
    ("transformer prompt causal", lambda: ds.fit_transformer_prompt(CAUSAL, X, Y), ConfigError, "lm"),
    ("transformer prompt tokens long", lambda: ds.fit_transformer_prompt(MASKED, np.zeros((4, 8), int), Y[:4]),
     TokenError, "tokens"),
    ("transformer prompt test long", lambda: ds.fit_transformer_prompt(MASKED, X, Y, test=(np.zeros((4, 8), int),
                                                                                        Y[:4])), TokenError, "tokens"),
    ("transformer prompt test str", lambda: ds.fit_transformer_prompt(MASKED, X, Y, test="x"), ConfigError, "test"),
    ("transformer prompt steps huge", lambda: ds.fit_transformer_prompt(MASKED, X, Y, steps=HUGE), ConfigError,
     "steps"),
    ("exact attention LogLinear", lambda: ds.fit_exact_attention_prompt(LogLinearWorld.random(0, 3, 4, 3), XM, Y),
     ConfigError, "world"),
    ("exact attention k huge", lambda: ds.fit_exact_attention_prompt(M, XM, Y, k=10**9), ConfigError, r"\bk\b"),
    ("exact attention k 20000", lambda: ds.fit_exact_attention_prompt(M, XM, Y, k=20000), ConfigError,
     "^k: expected a prompt length"),
    ("exact attention test", lambda: ds.fit_exact_attention_prompt(M, XM, Y, test=[XM]), ConfigError, "test"),
    ("exact attention d_key 0", lambda: ds.fit_exact_attention_prompt(M, XM, Y, d_key=0), ConfigError, "d_key"),
    ("transformer attention lm", lambda: ds.fit_transformer_attention_prompt(H, XM, Y), ConfigError, "lm"),
    ("transformer attention steps huge", lambda: ds.fit_transformer_attention_prompt(MASKED, XM, Y, steps=10**9),
     ConfigError, "steps"),
    ("transformer attention batch 0", lambda: ds.fit_transformer_attention_prompt(MASKED, XM, Y, batch_size=0),
     ConfigError, "batch_size"),
    ("transformer attention test", lambda: ds.fit_transformer_attention_prompt(MASKED, XM, Y, test=(XM, None)),
     ShapeError, "test labels"),
]


@pytest.mark.parametrize("label, call, error, name", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_typed_error_naming_the_argument(label, call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_float_labels_that_are_class_ids_are_accepted():
    head = ds.fit_linear_head(F, Y.astype(float), method="adam", steps=2)
    assert head.accuracy(F, Y.astype(float)) == head.accuracy(F, Y)


HOSTILE = st.one_of(st.none(), st.text(max_size=3), st.booleans(), st.complex_numbers(),
                    st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf")), st.lists(st.integers(), max_size=2))


@given(lr=HOSTILE)
def test_every_hostile_learning_rate_is_named(lr):
    """No hostile lr reaches the optimiser (so nothing compiles): each is a ConfigError naming lr."""
    if isinstance(lr, bool):  # True is 1.0 to simlm.checks.check_positive
        return
    for fit in (lambda: ds.fit_linear_head(F, Y, lr=lr), lambda: ds.fit_attention_head(FA, Y, lr=lr),
                lambda: ds.fit_exact_prompt(H, X, Y, lr=lr)):
        with pytest.raises(ConfigError, match=r"^lr:"):
            fit()


@given(labels=st.lists(st.integers(-3, 5), min_size=16, max_size=16), n_classes=st.integers(2, 3))
def test_labels_outside_the_classes_are_named(labels, n_classes):
    y = np.array(labels)
    if y.min() >= 0 and y.max() < n_classes:
        with warnings.catch_warnings():  # a class without a label warns (no minimiser): not this test's point
            warnings.simplefilter("ignore", NotConvergedWarning)
            head = ds.fit_linear_head(F, y, n_classes=n_classes, method="adam", steps=1)
        assert head.weight.shape == (4, n_classes)
    else:
        with pytest.raises(ConfigError, match=r"^labels: class id"):
            ds.fit_linear_head(F, y, n_classes=n_classes, steps=1)


@given(k=st.integers(-2, 2), steps=st.integers(-2, 2), n_restarts=st.integers(-2, 2))
def test_prompt_fit_sizes_must_be_positive(k, steps, n_restarts):
    if min(k, steps, n_restarts) >= 1:
        return  # a valid fit: not what this test is about (tests/test_prompts.py)
    bad = "k" if k < 1 else "n_restarts" if n_restarts < 1 else "steps"
    with pytest.raises(ConfigError, match=rf"^{bad}:"):
        ds.fit_exact_prompt(H, X, Y, k=k, steps=steps, n_restarts=n_restarts)


def test_the_task_builders_and_the_ceiling_check_their_options_before_anything_compiles(monkeypatch):
    """min_class_fraction, max_tries, nnz and seed were checked after the probe was sampled and labelled (a
    2–3 s compile first; a bad seed named ``key``), the continuations' options after the forward filter, the
    ceiling's after the labels (and at T' = T not at all: n_continuations = 0 and key = "x" gave (1.0, 0.0)),
    head tuning's n_continuations after the head was fitted (a review, 2026-12-06)."""
    import importlib
    import math

    ht, tasks = (importlib.import_module(f"simlm.downstream.{m}") for m in ("head_tuning", "tasks"))

    def reached(*a, **k):
        raise AssertionError("reached the compiled work before the options were checked")

    monkeypatch.setattr(tasks, "sample_task_data", reached)
    monkeypatch.setattr(tasks, "_predicted_state", reached)
    monkeypatch.setattr(MemoryHMM, "sample", reached)
    monkeypatch.setattr(ds.PosteriorTask, "labels", reached)
    monkeypatch.setattr(ht, "task_features", reached)
    for call, match in (
            (lambda: ds.make_posterior_task(H, 0, min_class_fraction=0.9), "^min_class_fraction"),
            (lambda: ds.make_posterior_task(H, -1), "^seed"), (lambda: ds.make_posterior_task(H, 1.5), "^seed"),
            (lambda: ds.make_posterior_task(H, 0, max_tries=0), "^max_tries"),
            (lambda: ds.make_posterior_task(H, 0, nnz=0), "nnz"),
            (lambda: ds.make_memory_task(M, 0, min_class_fraction=2), "^min_class_fraction"),
            (lambda: ds.sample_continuations(H, X, 2, "x"), "^key"),
            (lambda: ds.sample_continuations(H, X, 2, 0, n_continuations=0), "^n_continuations"),
            (lambda: ds.bayes_ceiling(H, TASK, X, 6, n_continuations=0), "^n_continuations"),
            (lambda: ds.bayes_ceiling(H, TASK, X, 6, key="x"), "^key"),
            (lambda: ds.bayes_ceiling(H, TASK, X[:1], 3), "^tokens_full"),
            (lambda: ds.head_tuning(LM, H, TASK, (X, Y), (X, Y), visible_length=2, n_continuations=0),
             "^n_continuations"),
            (lambda: ds.head_tuning(LM, H, TASK, (X, Y), (X, Y), seed=-1), "^seed")):
        with pytest.raises(ConfigError, match=match):
            call()
    monkeypatch.undo()
    # the ceiling beside labels that are not the task's is NaN: it read 1.0 beside an accuracy of 0.49 on
    # random labels; the task's own labels, given, get it
    own = np.asarray(TASK.labels(H, X))
    other = ds.head_tuning(LM, H, TASK, (X, own), (X, 1 - own), visible_length=6)
    same = ds.head_tuning(LM, H, TASK, (X, own), (X, own), visible_length=6)
    assert math.isnan(other.bayes_ceiling) and same.bayes_ceiling == 1.0


def test_a_heads_accuracy_checks_its_labels_before_predicting(monkeypatch):
    """Labels of the wrong length were refused after the head's logits had compiled (a review, 2026-12-07)."""
    rng = np.random.default_rng(0)
    f, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    head = ds.fit_linear_head(f, y)
    monkeypatch.setattr(type(head), "predict", lambda self, features: pytest.fail("predicted before the check"))
    with pytest.raises(ShapeError, match=r"labels: expected shape \(20,\)"):
        head.accuracy(f, y[:5])
    with pytest.raises(ShapeError, match="features: expected one row per label"):
        head.accuracy(f[0], y[:3])


def test_an_impossible_sequence_in_head_tunings_train_or_test_set_names_that_set():
    """The task's labels of an impossible sequence raised "tokens: sequence 1 has probability zero …", naming
    neither ``train`` nor ``test`` (a review, 2026-12-08)."""
    from simlm.errors import ZeroProbabilityError

    world = HMM([0.5, 0.5], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]])  # each state repeats its word
    task = ds.PosteriorTask(mu=np.array([1.0, -1.0]))
    fine, impossible = np.array([[0, 0, 0], [1, 1, 1]] * 4), np.array([[0, 0, 0], [0, 1, 0]] * 4)
    for name, train, test in (("train", impossible, fine), ("test", fine, impossible)):
        with pytest.raises(ZeroProbabilityError, match=f"^{name}: sequence 1 has probability zero"):
            ds.head_tuning(WorldLM(world), world, task, train, test)


def test_with_labels_given_an_impossible_sequence_is_still_named_by_its_set():
    """With labels passed, the task computes none: the LM's law at the prepended mask refused the sequence, as
    "tokens: …" (a review of the fix above).  The features' refusal is named by the set too."""
    from simlm.errors import ZeroProbabilityError

    world = HMM([0.5, 0.5], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]])
    task = ds.PosteriorTask(mu=np.array([1.0, -1.0]))
    fine, impossible = np.array([[0, 0, 0], [1, 1, 1]] * 4), np.array([[0, 0, 0], [0, 1, 0]] * 4)
    y = np.array([1, 0] * 4)
    for name, train, test in (("train", impossible, fine), ("test", fine, impossible)):
        with pytest.raises(ZeroProbabilityError, match=f"^{name}: sequence 1 has probability zero"):
            ds.head_tuning(WorldLM(world), world, task, (train, y), (test, y))
