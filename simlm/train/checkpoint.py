"""Orbax checkpoints of trained models, with JSON metadata beside them (no pickle anywhere).

Layout of one checkpoint directory::

    <dir>/state/          Orbax: a pytree of arrays ({"params": pure dict, …})
    <dir>/metadata.json   model config, training config, ε reached, step, … (written last: a checkpoint
                          without metadata.json is incomplete and is ignored)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from simlm.errors import ConfigError
from simlm.models.transformer import TransformerConfig, TransformerLM, init_transformer


def _to_jsonable(x):
    if isinstance(x, dict):
        return {k: _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_to_jsonable(payload), indent=2, sort_keys=True))
    os.replace(tmp, path)


def claim_json(path, payload: dict, *, owner: str, fix: str) -> None:
    """A directory belongs to one configuration: write ``payload`` to ``path`` on first use; later, raise
    :class:`ConfigError` "``owner`` (differs in [keys]); ``fix``" if ``path`` holds a different one."""
    path = Path(path)
    mine = json.loads(json.dumps(_to_jsonable(payload)))
    if path.exists():
        old = json.loads(path.read_text())
        if old != mine:
            diff = sorted(k for k in set(mine) | set(old) if old.get(k) != mine.get(k))
            raise ConfigError(f"{owner} (differs in {diff}); {fix}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, mine)


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
    return json.loads(path.read_text())


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
