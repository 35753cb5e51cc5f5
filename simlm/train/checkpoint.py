"""Orbax checkpoints of trained models, with JSON metadata beside them (no pickle anywhere).

Layout of one checkpoint directory::

    <dir>/state/          Orbax: a pytree of arrays ({"params": pure dict, …})
    <dir>/metadata.json   model config, training config, ε reached, step, … (written last: a checkpoint
                          without metadata.json is incomplete and is ignored)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from simlm.errors import ConfigError
from simlm.jsonio import read_json, write_json_atomic
from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer


def save_tree(directory, tree, metadata: dict) -> Path:
    """Save a pytree of arrays with Orbax and ``metadata`` as JSON beside it; overwrites ``directory``.
    The metadata is written last, so an interrupted save leaves no valid-looking checkpoint."""
    directory = Path(directory).absolute()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "state", tree)
        ckptr.wait_until_finished()
    write_json_atomic(directory / "metadata.json", metadata)
    return directory


def restore_tree(directory, like):
    """Restore the pytree saved by :func:`save_tree`, with the structure, shapes and dtypes of ``like``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(Path(directory).absolute() / "state", abstract)


def save_model(directory, params, metadata: dict) -> Path:
    """Save one model's parameters (an ``nnx.State``); ``metadata`` must hold ``model_config``."""
    return save_tree(directory, {"params": nnx.to_pure_dict(params)}, metadata)


def read_metadata(directory) -> dict:
    path = Path(directory) / "metadata.json"
    if not path.exists():
        raise ConfigError(f"checkpoint: {directory} has no metadata.json (not a complete simlm checkpoint)")
    return read_json(path, what="checkpoint")


def load_lm(directory) -> TransformerLM:
    """A saved checkpoint back as a :class:`~simlm.models.transformer.TransformerLM`; its metadata is
    on ``lm.metadata``."""
    meta = read_metadata(directory)
    model = init_transformer(TransformerConfig.from_dict(meta["model_config"]), 0)
    params = nnx.state(model, nnx.Param)
    restored = restore_tree(directory, {"params": nnx.to_pure_dict(params)})
    nnx.replace_by_pure_dict(params, restored["params"])
    nnx.update(model, params)
    lm = TransformerLM(model)
    lm.metadata = meta
    return lm
