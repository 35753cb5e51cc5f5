"""The ``simlm`` command.  It parses and validates arguments and calls library code; no logic of its own.

    simlm demo [--seed 0] [--states 8] [--symbols 10] [--family permutation-mixture]
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np

from simlm.errors import ConfigError, SimlmError

#: the smallest value of each integer option of ``simlm demo`` (``--seed + 1`` seeds the sample, and seeds
#: are below 2**63).
_DEMO_MINIMA = {"seed": 0, "states": 1, "symbols": 1, "sequences": 2, "length": 1, "show": 1}


def _check_demo(args) -> None:
    """Each option's range, named as typed on the command line, before any work."""
    for name, lo in _DEMO_MINIMA.items():
        value = getattr(args, name)
        if value < lo or (name == "seed" and value >= 2**63 - 1):
            bound = "in [0, 2**63 − 1)" if name == "seed" else f"≥ {lo}"
            raise ConfigError(f"--{name}: expected an integer {bound}, got {value}")


def _demo(args) -> int:
    from simlm.worlds import HMM

    _check_demo(args)
    options = {"transition_temp": 0.1, "emission_temp": 0.1} if args.family == "permutation-mixture" else {}
    with _options(f"--states {args.states} --symbols {args.symbols} --family {args.family}"):
        world = HMM.random(args.seed, args.states, args.symbols, family=args.family, **options)
    with _options(f"--show {args.show}"):
        x = np.asarray(world.sample(args.seed + 1, 1, args.show))[0]
        laws = np.asarray(world.next_token_probs(x))
        masked = np.asarray(world.masked_token_probs(x, [args.show // 2]))[0]
    with _options(f"--sequences {args.sequences} --length {args.length}"):
        rate, se = world.entropy_rate(args.seed, n_sequences=args.sequences, length=args.length)
    print(f"world: {world!r}  (family {args.family}, seed {args.seed})")
    print(f"exact entropy rate (optimal LM cross-entropy): {rate:.4f} ± {se:.4f} nats/token "
          f"[{args.sequences} sequences × {args.length} tokens; uniform would be {np.log(args.symbols):.4f}]")
    print(f"\na sample x = {' '.join(map(str, x))}\n")
    print("exact next-token laws p*(x_t = · | x_<t):")
    print("  t  x_t  p*(x_t|x_<t)  " + " ".join(f"{v:>5d}" for v in range(args.symbols)))
    for t, (tok, law) in enumerate(zip(x, laws)):
        print(f"{t:3d}  {tok:3d}  {law[tok]:12.4f}  " + " ".join(f"{p:5.3f}" for p in law))
    print(f"\nexact masked law p*(x_{args.show // 2} = · | all other tokens): "
          + " ".join(f"{p:.3f}" for p in masked))
    return 0


@contextlib.contextmanager
def _options(flags: str):
    """Re-raise a library error prefixed by the command-line ``flags`` that chose its arguments (the library
    names its own parameters: ``n_sequences`` is ``--sequences`` here)."""
    try:
        yield
    except SimlmError as err:
        raise type(err)(f"{flags}: {err}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sample a default world; print its exact entropy rate and next-token laws")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--states", type=int, default=8)
    demo.add_argument("--symbols", type=int, default=10)
    demo.add_argument("--family", default="permutation-mixture", choices=["dirichlet", "permutation-mixture", "ginc"])
    demo.add_argument("--sequences", type=int, default=64, help="sequences for the entropy-rate estimate")
    demo.add_argument("--length", type=int, default=1024, help="tokens per sequence for the estimate")
    demo.add_argument("--show", type=int, default=8, help="tokens of the printed sample")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SimlmError as err:
        print(f"simlm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
