"""Orbax checkpoints of trained models, with JSON metadata beside them (no pickle anywhere).

Layout of one checkpoint directory::

    <dir>/state/          Orbax: a pytree of arrays ({"params": pure dict, …})
    <dir>/metadata.json   model config, training config, ε reached, step, …, and the SHA-256 of the
                          arrays (written last: a checkpoint without metadata.json is incomplete)

Reading one back never ends in an Orbax/TensorStore traceback: a missing, truncated or altered
checkpoint is a :class:`~simlm.errors.ConfigError` naming the directory and what is wrong, and the
checksum makes an altered array an error rather than a silently different model.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from simlm.errors import ConfigError
from simlm.jsonio import read_json, write_json_atomic
from simlm.models.transformer import (CausalTransformerLM, MaskedTransformerLM, TransformerConfig, TransformerLM,
                                      init_transformer)

_RECREATE = "if it is a ladder checkpoint of a training run, rerun train with that run directory to re-create it"


def checksum(tree) -> str:
    """SHA-256 of a pytree's arrays (shapes, dtypes and bytes, in leaf order)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_tree(directory, tree, metadata: dict) -> dict:
    """Save a pytree of arrays with Orbax and ``metadata`` (plus the tree's checksum) as JSON beside it;
    overwrites ``directory`` and returns the metadata written.  The metadata is written last, so an
    interrupted save leaves no valid-looking checkpoint."""
    directory = Path(directory).absolute()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "state", tree)
        ckptr.wait_until_finished()
    metadata = {**metadata, "checksum": checksum(tree)}
    write_json_atomic(directory / "metadata.json", metadata)
    return metadata


def read_metadata(directory) -> dict:
    """The metadata of a checkpoint, or a :class:`ConfigError` naming the file and the problem."""
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
    if not (directory / "state").is_dir():
        raise ConfigError(f"checkpoint: {directory / 'state'} is missing; {_RECREATE}")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(directory / "state", abstract)
    except Exception as err:  # Orbax/TensorStore report damage with many exception types
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ConfigError(f"checkpoint: {directory / 'state'} cannot be read ({type(err).__name__}: {detail}); "
                          f"{_RECREATE}") from None
    if "checksum" in meta and checksum(tree) != meta["checksum"]:
        raise ConfigError(f"checkpoint: {directory / 'state'} does not hold the arrays saved there (their checksum "
                          f"differs from metadata.json's: the files were altered or mixed up); {_RECREATE}")
    return tree


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
    meta = read_metadata(directory)
    if not isinstance(meta.get("model_config"), dict):
        raise ConfigError(f"checkpoint: {Path(directory) / 'metadata.json'} has no model_config; {_RECREATE}")
    if expect:
        differ = sorted(k for k in expect if meta.get(k) != expect[k])
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
    lm = TransformerLM(model)
    lm.metadata = meta
    return lm
