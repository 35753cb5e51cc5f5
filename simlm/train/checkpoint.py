"""Orbax checkpoints of trained models, with JSON metadata beside them (no pickle anywhere).

Layout of one checkpoint directory::

    <dir>/state/          Orbax: a pytree of arrays ({"params": pure dict, …})
    <dir>/metadata.json   model config, training config, ε reached, step, …, and the SHA-256 of the
                          arrays and the model config (written last: a checkpoint without metadata.json is
                          incomplete)

Reading one back never ends in an Orbax/TensorStore traceback: a missing, truncated or altered
checkpoint is a :class:`~simlm.errors.ConfigError` naming the directory and what is wrong, and the
checksum makes an altered array or model config an error rather than a silently different model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from simlm.errors import ConfigError
from simlm.jsonio import differing, json_text, read_back, read_json, write_text_atomic
from simlm.models.transformer import (CausalTransformerLM, MaskedTransformerLM, TransformerConfig, TransformerLM,
                                      init_transformer)

_RECREATE = "if it is a ladder checkpoint of a training run, rerun train with that run directory to re-create it"


def checksum(tree, model_config: dict | None = None) -> str:
    """SHA-256 of a pytree's arrays (shapes, dtypes and bytes, in leaf order) and of ``model_config`` where
    given (as JSON reads it back, keys sorted): the arrays mean a model only with the config that built them —
    ``n_heads``, ``causal`` or the activation edited in metadata.json loaded the same arrays as another model
    without a word (a review, 2026-12-06)."""
    return _checksums(tree, model_config)[0]


def _checksums(tree, model_config: dict | None) -> tuple[str, str]:
    """(:func:`checksum` of the arrays and ``model_config``, of the arrays alone), the arrays hashed once."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    arrays = h.hexdigest()
    if model_config is None:
        return arrays, arrays
    h.update(b"model_config" + json.dumps(read_back(model_config), sort_keys=True).encode())
    return h.hexdigest(), arrays


def save_tree(directory, tree, metadata: dict) -> dict:
    """Save a pytree of arrays with Orbax and ``metadata`` (plus the tree's checksum) as JSON beside it;
    replaces ``directory`` and returns the metadata written.  The save is made in a sibling
    ``<name>.saving`` directory and moved into place once complete (metadata last), so an interrupted or
    refused save leaves the former checkpoint as it was and no valid-looking new one — or, killed between
    the two renames that swap it in, the complete new save beside the former one, which the next read or
    save puts in place (:func:`_finish_swap`)."""
    directory = Path(directory).absolute()
    try:  # before anything is written: a save is never left without its metadata
        metadata = {**metadata, "checksum": checksum(tree, metadata.get("model_config"))}
        text = json_text(metadata)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"metadata: cannot be written as JSON ({err})") from None
    empty = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
             if np.size(leaf) == 0]
    if empty:  # Orbax refuses them mid-save
        raise ConfigError(f"tree: Orbax cannot save arrays of zero size, e.g. the leaf {empty[0]}")
    _finish_swap(directory)  # a save killed between its two renames: its checkpoint in place first
    staging = directory.with_name(directory.name + ".saving")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(staging / "state", tree)
        ckptr.wait_until_finished()
    write_text_atomic(staging / "metadata.json", text)
    if directory.exists():
        replaced = directory.with_name(directory.name + ".replaced")
        if replaced.exists():
            shutil.rmtree(replaced)
        os.replace(directory, replaced)
        os.replace(staging, directory)
        shutil.rmtree(replaced)
    else:
        os.replace(staging, directory)
    return metadata


def _finish_swap(directory: Path) -> None:
    """Where a save was killed between its two renames — ``directory`` moved to ``<name>.replaced``, the
    complete new save still ``<name>.saving`` — nothing was at ``directory`` and the checkpoint read as missing
    (a review, 2026-12-06): put the new save in place (its metadata is written last, so a ``.saving`` holding
    it is complete), else the former one.  A directory that cannot be renamed is left (the read then fails).
    Checkpoints have one writer at a time (a trainer's run directory is its own)."""
    directory = Path(directory)
    replaced = directory.with_name(directory.name + ".replaced")
    if directory.exists() or not replaced.is_dir():  # only a swap's signature: a lone .saving (a first save
        return  # killed before its rename, or another process's save in progress) stays unread, as before
    for sibling in (directory.with_name(directory.name + ".saving"), replaced):
        if (sibling / "metadata.json").is_file() and (sibling / "state").is_dir():
            try:
                os.replace(sibling, directory)
            except OSError:
                return
            return


def read_metadata(directory) -> dict:
    """The metadata of a checkpoint, or a :class:`ConfigError` naming the file and the problem (a save killed
    between its two renames is completed first: :func:`_finish_swap`)."""
    _finish_swap(Path(directory))
    path = Path(directory) / "metadata.json"
    if not path.is_file():
        raise ConfigError(f"checkpoint: {directory} has no metadata.json (not a complete simlm checkpoint); {_RECREATE}")
    meta = read_json(path, what="checkpoint", fix=_RECREATE)
    if not isinstance(meta, dict):
        raise ConfigError(f"checkpoint: {path} does not hold a JSON object; {_RECREATE}")
    return meta


def restore_tree(directory, like, metadata: dict | None = None):
    """Restore the pytree saved by :func:`save_tree`, with the structure, shapes and dtypes of ``like``.
    A missing, truncated or altered ``state/`` (checked against the saved checksum) raises
    :class:`ConfigError` naming the directory."""
    directory = Path(directory).absolute()
    meta = read_metadata(directory) if metadata is None else metadata
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    want = _shapes(like)
    if not (directory / "state").is_dir():
        raise ConfigError(f"checkpoint: {directory / 'state'} is missing; {_RECREATE}")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            # arrays of other shapes are refused before Orbax starts reading them (its aborted reads print
            # pages of TensorStore tracebacks), and numpy leaves of ``like`` would not make it check shapes
            stored = _stored_shapes(ckptr, directory / "state") or {}
            both = want.keys() & stored.keys()  # a missing or extra array is damage, which Orbax names below
            _check_shapes(directory, {k: want[k] for k in both}, {k: stored[k] for k in both})
            tree = ckptr.restore(directory / "state", abstract)
    except ConfigError:
        raise
    except Exception as err:  # Orbax/TensorStore report damage with many exception types
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ConfigError(f"checkpoint: {directory / 'state'} cannot be read ({type(err).__name__}: {detail}); "
                          f"{_RECREATE}") from None
    _check_shapes(directory, want, _shapes(tree))
    # every simlm checkpoint has a checksum (save_tree writes one): without it, a state/ swapped in from another
    # checkpoint loaded as this one's model (a review 2026-12-06)
    if not isinstance(meta.get("checksum"), str):
        raise ConfigError(f"checkpoint: {directory / 'metadata.json'} has no checksum, so its arrays cannot be "
                          f"checked to be the ones saved there; {_RECREATE}")
    # a checkpoint saved before the checksum covered model_config (arrays only) still loads
    if meta["checksum"] not in _checksums(tree, meta.get("model_config")):
        raise ConfigError(f"checkpoint: {directory / 'state'} does not hold the arrays saved there with its "
                          f"model_config (their checksum differs from metadata.json's: the files were altered or "
                          f"mixed up); {_RECREATE}")
    # Uncommitted, as the arrays of a computation are: Orbax places each on a device explicitly, and a jitted
    # function given committed arguments compiles a program of its own — a rung's LM read back and the live
    # run's final LM compiled every prompt fit twice (~10 s each in experiment 2)
    return jax.tree.map(lambda x: jnp.array(np.asarray(x), copy=True) if isinstance(x, jax.Array) else x, tree)


def _shapes(tree) -> dict:
    """``{leaf path: (shape, dtype)}`` of a pytree of arrays (or of Orbax's array metadata)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    name = lambda k: str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))  # Orbax's keys are str
    return {"/".join(map(name, path)): (tuple(np.shape(x)), np.dtype(x.dtype)) for path, x in leaves}


def _stored_shapes(ckptr, path) -> dict | None:
    """The shapes and dtypes of the arrays saved at ``path``, from Orbax's metadata; None where this
    version of Orbax does not give them in the form read here (the restored arrays are checked then)."""
    try:
        meta = ckptr.metadata(path)
        meta = getattr(meta, "item_metadata", meta)
        return _shapes(getattr(meta, "tree", meta))
    except Exception:
        return None


def _check_shapes(directory, want: dict, stored: dict | None) -> None:
    if stored is None or stored == want:
        return
    differ = sorted(k for k in want.keys() | stored.keys() if want.get(k) != stored.get(k))
    say = lambda d, k: "none" if k not in d else f"{d[k][0]} {d[k][1]}"
    detail = "; ".join(f"{k}: saved {say(stored, k)}, expected {say(want, k)}" for k in differ[:3])
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    raise ConfigError(f"checkpoint: {directory / 'state'} holds other arrays than its config says ({detail}{more}); "
                      f"{_RECREATE}")


def _expected(key, value):
    """``expect[key]`` as it reads back from a checkpoint's JSON metadata (:func:`~simlm.jsonio.read_back`),
    or a ConfigError naming it for what JSON cannot hold."""
    try:
        return read_back(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"expect: entry {key!r} cannot be compared with a checkpoint's JSON metadata ({err}); "
                          f"pass plain values, e.g. a config's to_dict()") from None


def save_model(directory, params, metadata: dict) -> dict:
    """Save one model's parameters (an ``nnx.State``); ``metadata`` must hold ``model_config``."""
    return save_tree(directory, {"params": nnx.to_pure_dict(params)}, metadata)


def load_lm(directory, *, expect: dict | None = None) -> CausalTransformerLM | MaskedTransformerLM:
    """A saved checkpoint back as a language model of the kind its config says — a
    :class:`~simlm.models.transformer.CausalTransformerLM` or a
    :class:`~simlm.models.transformer.MaskedTransformerLM` (both TransformerLMs); its metadata is
    on ``lm.metadata``.  ``expect`` (metadata entries, e.g. the world fingerprint and configs of a run)
    must match what the checkpoint recorded, so a checkpoint of another run is never loaded silently."""
    if not isinstance(directory, (str, Path)):
        raise ConfigError(f"directory: expected a checkpoint directory path, got {type(directory).__name__}")
    if expect is not None and not isinstance(expect, Mapping):
        raise ConfigError(f"expect: expected a mapping of metadata entries (or None), got {type(expect).__name__}")
    meta = read_metadata(directory)
    if not isinstance(meta.get("model_config"), dict):
        raise ConfigError(f"checkpoint: {Path(directory) / 'metadata.json'} has no model_config; {_RECREATE}")
    if expect:
        differ = differing({k: meta.get(k) for k in expect}, {k: _expected(k, v) for k, v in expect.items()})
        if differ:
            raise ConfigError(f"checkpoint: {directory} was saved by a different run (differs in {differ}); "
                              f"{_RECREATE}")
    try:
        model_config = TransformerConfig.from_dict(meta["model_config"])
    except ConfigError as err:
        raise ConfigError(f"checkpoint: {Path(directory) / 'metadata.json'} has an invalid model_config ({err}); "
                          f"{_RECREATE}") from None
    model = init_transformer(model_config, 0)
    params = nnx.state(model, nnx.Param)
    restored = restore_tree(directory, {"params": nnx.to_pure_dict(params)}, meta)
    nnx.replace_by_pure_dict(params, restored["params"])
    nnx.update(model, params)
    trained = meta.get("train_config", {}).get("seq_len") if isinstance(meta.get("train_config"), dict) else None
    lm = TransformerLM(model, trained_length=trained if isinstance(trained, int) and trained > 0 else None)
    lm.metadata = meta
    return lm
