"""A tiny but real training job for ``bayesmix run``: a character n-gram language model trained
on a data mixture of four text domains that ship with Python, reporting held-out losses.

Run it as bayesmix does for each proposed mixture::

    python examples/tiny_trainer.py --run r001 --mixture-file mixture.json --out result.csv
    python examples/tiny_trainer.py --run r001 --mixture '{"python": 0.5, "docstrings": 0.5,
        "manual": 0, "unicode": 0}' --out result.csv
    python examples/tiny_trainer.py --list-domains

Domains (built in memory from the running Python's standard library; docs/tiny_trainer.md gives
their sizes): ``python`` (source of the stdlib's top-level modules, docstrings removed),
``docstrings`` (the docstrings of the same modules), ``manual`` (the help topics of
``pydoc_data.topics``: the language reference as plain text), ``unicode`` (a table in the
layout of UnicodeData.txt, written from the ``unicodedata`` module). Each domain's documents are
split into train and held-out documents by a hash of their names (about 1 in 10 held out).

Model size and training length for multi-fidelity loops: ``--n-params N`` is the model size as
the loop names it (``{n_params}`` of ``bayesmix run``'s template), the n-gram order (1-8; the
result gets an ``n_params`` column); ``--steps S`` trains on S chunks of :data:`CHUNK`
characters (``{steps}``; sets ``--tokens``).

Training: ``--tokens`` characters are sampled from the domains' train text in proportion to the
mixture, in chunks of :data:`CHUNK` characters (deterministic given ``--seed``), and an
interpolated Kneser-Ney character n-gram model of ``--order`` is counted on them. Result: the
held-out cross-entropy in nats per character on every domain, written atomically as one row of
bayesmix's tidy run table: ``run,tokens,mix.<domain>...,loss.<domain>...``.

Test hooks (environment variables): ``TINY_TRAINER_FAIL_ONCE=<marker file>`` makes the job
create the marker and exit 3 when the marker does not exist yet (a job that fails once, then
succeeds on retry); ``TINY_TRAINER_SLEEP=<seconds>`` sleeps before training (a job to kill).

Importable: :func:`domains`, :func:`train`. NumPy and the standard library only.
"""

from __future__ import annotations

import argparse
import ast
import csv
import functools
import hashlib
import io
import json
import math
import os
import secrets
import sys
import sysconfig
import time
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: Symbols of the model: the 128 ASCII codes; any other character is read as code 0 (NUL,
#: which the sources do not contain), so a "token" is one character.
VOCAB = 128
#: Characters per sampled training chunk; n-grams never cross a chunk's edges.
CHUNK = 256
DEFAULT_TOKENS = 300_000
DEFAULT_ORDER = 5
MAX_ORDER = 8  # an n-gram of order 8 is a 56-bit integer code (VOCAB = 2**7)
MAX_TOKENS = 20_000_000
MAX_SEED = 2**63 - 1
#: Held-out positions start here in every domain's held-out text, so every order scores the same
#: characters (the first ones lack a full context).
SKIP = MAX_ORDER - 1
#: Per-domain caps, characters: train text (sampled from) and held-out text (scored).
TRAIN_CHARS = 400_000
HELDOUT_CHARS = 100_000
#: Characters of a section of the manual (a document of the ``manual`` domain), at least.
SECTION_CHARS = 2_000
#: A document is held out when the hash of its name is 0 modulo this.
HELDOUT_EVERY = 10
#: |sum(shares) - 1| allowed in a mixture.
SUM_TOLERANCE = 1e-6
DOMAINS = ("python", "docstrings", "manual", "unicode")
#: Top-level stdlib modules left out: machine-specific (_sysconfigdata*), patched by
#: distributions (site, sysconfig) or not plain Python text (this.py is rot13).
EXCLUDED_MODULES = ("site.py", "sysconfig.py", "this.py")
#: Unicode characters whose names are generated from their code point (not data worth learning).
ALGORITHMIC_NAMES = (
    "CJK UNIFIED IDEOGRAPH",
    "CJK COMPATIBILITY IDEOGRAPH",
    "HANGUL SYLLABLE",
    "TANGUT IDEOGRAPH",
    "KHITAN SMALL SCRIPT CHARACTER",
    "NUSHU CHARACTER",
)


class TrainerError(ValueError):
    """A bad input (mixture, option, environment variable): printed as one line, exit 2."""


# ---------------------------------------------------------------------------------- corpora
def domains() -> list[str]:
    """The trainer's domain names, in the order of its result columns."""
    return list(DOMAINS)


def _stdlib_modules() -> list[Path]:
    """Top-level ``*.py`` modules of the standard library, sorted (no packages: distributions
    split some packages out, e.g. Debian's idlelib and tkinter; never tests or site-packages)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    keep = [
        p for p in files if p.name not in EXCLUDED_MODULES and not p.name.startswith("_sysconfig")
    ]
    if not keep:
        raise TrainerError(f"no Python modules found in the standard library folder {root}")
    return keep


def _split_docstrings(source: str) -> tuple[str, list[str]]:
    """``source`` without its docstrings (lines left empty are dropped), and the docstrings
    (cleaned with inspect's rules: common indentation removed)."""
    module = ast.parse(source)
    cuts: list[tuple[int, int, int, int]] = []
    docs: list[str] = []
    for node in [module, *_definitions(module.body)]:
        doc = ast.get_docstring(node, clean=True)
        if doc is None:
            continue
        stmt = node.body[0]
        assert stmt.end_lineno is not None and stmt.end_col_offset is not None
        cuts.append((stmt.lineno, stmt.col_offset, stmt.end_lineno, stmt.end_col_offset))
        docs.append(doc)
    lines = source.splitlines(keepends=True)
    # cut from the end so earlier positions stay valid; ast columns are UTF-8 byte offsets
    for l0, c0, l1, c1 in sorted(cuts, reverse=True):
        first = lines[l0 - 1].encode("utf-8")
        last = lines[l1 - 1].encode("utf-8")
        joined = (first[:c0] + last[c1:]).decode("utf-8")
        lines[l0 - 1 : l1] = [] if joined.strip() == "" else [joined]
    return "".join(lines), docs


def _definitions(
    body: list[ast.stmt],
) -> list[ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef]:
    """Classes and functions defined anywhere in ``body`` (statements only: faster than
    ``ast.walk``, which visits every expression too)."""
    found: list[ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef] = []
    for stmt in body:
        if isinstance(stmt, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(stmt)
        blocks = [getattr(stmt, name, []) for name in ("body", "orelse", "finalbody")]
        blocks += [handler.body for handler in getattr(stmt, "handlers", [])]
        blocks += [case.body for case in getattr(stmt, "cases", [])]
        for block in blocks:
            found += _definitions(block)
    return found


def _unicode_blocks() -> list[tuple[str, str]]:
    """The named characters of the ``unicodedata`` module in UnicodeData.txt's layout, one
    document per row of 16 code points (a row of the Unicode code charts): ``(name, text)``."""
    blocks: dict[int, list[str]] = {}
    for cp in range(0x110000):
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        if not name or name.startswith(ALGORITHMIC_NAMES):
            continue
        upper, lower, title = ch.upper(), ch.lower(), ch.title()
        fields = [
            f"{cp:04X}",
            name,
            unicodedata.category(ch),
            str(unicodedata.combining(ch)),
            unicodedata.bidirectional(ch),
            unicodedata.decomposition(ch),
            _num(unicodedata.decimal(ch, None)),
            _num(unicodedata.digit(ch, None)),
            _num(unicodedata.numeric(ch, None)),
            "Y" if unicodedata.mirrored(ch) else "N",
            "",
            "",
            f"{ord(upper):04X}" if len(upper) == 1 and upper != ch else "",
            f"{ord(lower):04X}" if len(lower) == 1 and lower != ch else "",
            f"{ord(title):04X}" if len(title) == 1 and title != ch else "",
        ]
        blocks.setdefault(cp >> 4, []).append(";".join(fields) + "\n")
    return [(f"U+{b << 4:04X}", "".join(lines)) for b, lines in sorted(blocks.items())]


def _num(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _manual_sections() -> list[tuple[str, str]]:
    """The help topics of ``pydoc_data.topics`` (sorted by name) cut into sections of whole
    paragraphs of at least :data:`SECTION_CHARS` characters, named ``topic#i``. A paragraph is
    kept only where it first occurs: topics repeat each other's paragraphs (``for`` is part of
    ``compound``), which would put held-out text into the train text."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for key in sorted(topics):
        section: list[str] = []
        for paragraph in topics[key].split("\n\n"):
            if not paragraph.strip() or paragraph in seen:
                continue
            seen.add(paragraph)
            section.append(paragraph + "\n\n")
            if sum(map(len, section)) >= SECTION_CHARS:
                out.append((f"{key}#{len(out)}", "".join(section)))
                section = []
        if section:
            out.append((f"{key}#{len(out)}", "".join(section)))
    return out


def _hash(group: str, name: str) -> int:
    """A document's place: documents are read in this order, and held out when it is 0 modulo
    HELDOUT_EVERY (an order that does not change when another document is added or missing)."""
    return int.from_bytes(hashlib.sha256(f"{group}:{name}".encode()).digest()[:8], "big")


def _split(group: str, docs: list[tuple[str, str]], texts: dict[str, list[str]]) -> None:
    """Append each document's text to ``texts["train"]`` or ``texts["heldout"]``."""
    for name, text in docs:
        texts["heldout" if _hash(group, name) % HELDOUT_EVERY == 0 else "train"].append(text)


def _stdlib_texts() -> dict[str, dict[str, list[str]]]:
    """Train and held-out texts of ``python`` and ``docstrings``: one split of the modules for
    both domains (a held-out module is held out in both). Modules are parsed in hash order only
    until both domains have :data:`TRAIN_CHARS` and :data:`HELDOUT_CHARS` characters (the rest
    would be cut off anyway)."""
    texts: dict[str, dict[str, list[str]]] = {
        d: {"train": [], "heldout": []} for d in ("python", "docstrings")
    }
    cap = {"train": TRAIN_CHARS, "heldout": HELDOUT_CHARS}
    for path in sorted(_stdlib_modules(), key=lambda p: _hash("stdlib", p.name)):
        part = "heldout" if _hash("stdlib", path.name) % HELDOUT_EVERY == 0 else "train"
        if all(sum(map(len, texts[d][part])) >= cap[part] for d in texts):
            continue
        code, docs = _split_docstrings(path.read_text(encoding="utf-8"))
        texts["python"][part].append(code)
        if docs:
            texts["docstrings"][part].append("\n\n".join(docs) + "\n")
    return texts


def _encode(text: str) -> np.ndarray:
    """Text as model symbols: ASCII codes, 0 for any other character. (n,) uint8."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < VOCAB, codes, 0).astype(np.uint8)


@functools.cache
def corpora() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per domain ``(train, heldout)`` symbol arrays (uint8), built once per process.

    A domain's documents (stdlib modules, sections of help topics, rows of 16 code points) are
    read in the order of a SHA-256 hash of their names; about 1 in :data:`HELDOUT_EVERY` is held
    out. Train text is the first :data:`TRAIN_CHARS` characters of the train documents joined in
    that order, held-out text the first :data:`HELDOUT_CHARS` characters of the held-out ones.
    """
    texts = _stdlib_texts()
    for domain, docs in (("manual", _manual_sections()), ("unicode", _unicode_blocks())):
        texts[domain] = {"train": [], "heldout": []}
        _split(domain, sorted(docs, key=lambda doc: _hash(domain, doc[0])), texts[domain])
    return {
        d: (
            _encode("".join(texts[d]["train"])[:TRAIN_CHARS]),
            _encode("".join(texts[d]["heldout"])[:HELDOUT_CHARS]),
        )
        for d in DOMAINS
    }


# ---------------------------------------------------------------------------------- sampling
def check_mixture(mixture: Mapping[str, object]) -> dict[str, float]:
    """The mixture as ``{domain: share}`` floats when valid: known domain names, shares finite
    and >= 0, summing to 1 within :data:`SUM_TOLERANCE`. TrainerError otherwise."""
    if not isinstance(mixture, Mapping) or not mixture:
        raise TrainerError(
            "the mixture must be a non-empty JSON object {domain: share}, "
            f"e.g. {json.dumps(dict.fromkeys(DOMAINS, 1 / len(DOMAINS)))}"
        )
    unknown = [str(d) for d in mixture if d not in DOMAINS]
    if unknown:
        raise TrainerError(
            f"unknown domain(s) {', '.join(map(repr, unknown))} in the mixture "
            f"(known: {', '.join(DOMAINS)})"
        )
    shares = {}
    for domain, value in mixture.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TrainerError(f"the share of {domain!r} is {value!r}, not a number")
        if not (math.isfinite(value) and value >= 0):
            raise TrainerError(f"the share of {domain!r} is {value!r}; shares must be finite, >= 0")
        shares[domain] = float(value)
    total = math.fsum(shares.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise TrainerError(f"the shares sum to {total:.9g}, not 1 (within {SUM_TOLERANCE:g})")
    return shares


def _characters(shares: Mapping[str, float], tokens: int) -> dict[str, int]:
    """Characters per domain: ``share * tokens`` rounded so they sum to ``tokens`` (largest
    remainders first, ties by domain order)."""
    exact = {d: shares.get(d, 0.0) * tokens for d in DOMAINS}
    chars = {d: math.floor(v) for d, v in exact.items()}
    left = tokens - sum(chars.values())
    by_remainder = sorted(DOMAINS, key=lambda d: (-(exact[d] - chars[d]), DOMAINS.index(d)))
    for d in by_remainder[:left]:
        chars[d] += 1
    return chars


def sample(shares: Mapping[str, float], tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training sample: ``(symbols, position_in_chunk)``, both (tokens,).

    Each domain's train text is cut into chunks of :data:`CHUNK` characters, shuffled with a
    generator seeded by ``(seed, domain index)``; the domain contributes its chunks in that
    order (the last one cut short) until it has its characters, starting over when its train
    text is used up. More characters of a domain add chunks and never change the earlier ones.
    """
    parts, positions = [], []
    for index, (domain, n_chars) in enumerate(_characters(shares, tokens).items()):
        if n_chars == 0:
            continue
        text = corpora()[domain][0]
        n_chunks = len(text) // CHUNK
        order = np.random.default_rng([seed, index]).permutation(n_chunks)
        need = -(-n_chars // CHUNK)
        starts = order[np.arange(need) % n_chunks] * CHUNK
        picked = text[starts[:, None] + np.arange(CHUNK)].reshape(-1)[:n_chars]
        parts.append(picked)
        positions.append(np.arange(n_chars) % CHUNK)
    return np.concatenate(parts), np.concatenate(positions)


# ---------------------------------------------------------------------------------- the model
def _ngram_codes(x: np.ndarray, n: int) -> np.ndarray:
    """Every n-gram of ``x`` as a base-VOCAB integer; element j is the n-gram ending at x[j+n-1].
    (len(x) - n + 1,) int64."""
    m = len(x) - n + 1
    codes = np.zeros(max(m, 0), dtype=np.int64)
    for i in range(n):
        codes = codes * VOCAB + x[i : i + m]
    return codes


class KneserNey:
    """Interpolated Kneser-Ney character n-gram model (Chen & Goodman 1998), one discount per
    order from the count-of-counts, interpolated down to the uniform distribution over VOCAB.

    The highest order uses the n-gram counts of the sample; lower orders use continuation
    counts (the number of different characters seen before the n-gram). Each level is held as
    sorted arrays, so scoring is a vectorised ``searchsorted`` per order.
    """

    def __init__(self, symbols: np.ndarray, position: np.ndarray, order: int):
        self.order = order
        unique = {}
        for n in range(1, order + 1):
            inside = position[n - 1 :] >= n - 1  # n-grams that do not cross a chunk's start
            unique[n] = np.unique(_ngram_codes(symbols, n)[inside], return_counts=True)
        self.levels = []
        for n in range(1, order + 1):
            if n == order:
                keys, counts = unique[n]
            else:  # continuation counts: distinct (n+1)-grams ending in the n-gram
                keys, counts = np.unique(unique[n + 1][0] % VOCAB**n, return_counts=True)
            contexts, which = np.unique(keys // VOCAB, return_inverse=True)
            totals = np.bincount(which, weights=counts)
            types = np.bincount(which).astype(float)
            n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
            discount = float(n1 / (n1 + 2 * n2)) if n1 > 0 else 0.5
            self.levels.append((keys, counts.astype(float), contexts, totals, types, discount))

    def log_probs(self, text: np.ndarray) -> np.ndarray:
        """Natural-log probability of each character of ``text`` from position :data:`SKIP`
        on, given the characters before it. (len(text) - SKIP,)"""
        at = np.arange(SKIP, len(text))
        prob = np.full(len(at), 1.0 / VOCAB)
        for n, (keys, counts, contexts, totals, types, discount) in enumerate(self.levels, 1):
            grams = _ngram_codes(text, n)[at - (n - 1)]
            c_gram = _lookup(keys, counts, grams)
            c_ctx = _lookup(contexts, totals, grams // VOCAB)
            t_ctx = _lookup(contexts, types, grams // VOCAB)
            seen = c_ctx > 0
            mixed = (np.maximum(c_gram - discount, 0.0) + discount * t_ctx * prob) / np.where(
                seen, c_ctx, 1.0
            )
            prob = np.where(seen, mixed, prob)
        return np.log(prob)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[keys == q] for each q in ``query`` (sorted ``keys``), 0 where q is absent."""
    if len(keys) == 0:
        return np.zeros(len(query))
    i = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[i] == query, values[i], 0.0)


def train(
    mixture: Mapping[str, float], tokens: int, seed: int = 0, order: int = DEFAULT_ORDER
) -> dict[str, float]:
    """Train on ``tokens`` characters drawn from ``mixture`` ({domain: share}, domains left out
    have share 0) and return the held-out loss of every domain, nats per character."""
    shares = check_mixture(mixture)
    _check_int("tokens", tokens, 1, MAX_TOKENS)
    _check_int("order", order, 1, MAX_ORDER)
    _check_int("seed", seed, 0, MAX_SEED)
    symbols, position = sample(shares, tokens, seed)
    model = KneserNey(symbols, position, order)
    return {d: float(-np.mean(model.log_probs(corpora()[d][1]))) for d in DOMAINS}


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TrainerError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


# ---------------------------------------------------------------------------------- the job
def write_result(
    path: Path,
    run: str,
    tokens: int,
    shares: Mapping[str, float],
    losses,
    n_params: int | None = None,
) -> None:
    """One row of the tidy run table (with an ``n_params`` column when given), written to a
    temporary file next to ``path`` and moved into place, so ``path`` is either absent or
    complete."""
    mixed = [d for d in DOMAINS if d in shares]
    size = [] if n_params is None else [n_params]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "run",
            *(["n_params"] if size else []),
            "tokens",
            *(f"mix.{d}" for d in mixed),
            *(f"loss.{d}" for d in DOMAINS),
        ]
    )
    writer.writerow(
        [
            run,
            *size,
            tokens,
            *(repr(shares[d]) for d in mixed),
            *(repr(losses[d]) for d in DOMAINS),
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with mode 0o666: the umask applies, as for any file the user creates
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_mixture(args: argparse.Namespace) -> dict[str, float]:
    if args.mixture_file is not None:
        where = f"--mixture-file {args.mixture_file}"
        try:
            text = Path(args.mixture_file).read_text(encoding="utf-8")
        except OSError as err:
            raise TrainerError(f"{where}: cannot read it ({err.strerror})") from None
    else:
        where, text = "--mixture", args.mixture
    try:
        mixture = json.loads(text)
    except json.JSONDecodeError as err:
        raise TrainerError(f"{where}: not JSON ({err.msg} at character {err.pos})") from None
    try:
        return check_mixture(mixture)
    except TrainerError as err:
        raise TrainerError(f"{where}: {err}") from None


def _test_hooks() -> None:
    """TINY_TRAINER_FAIL_ONCE and TINY_TRAINER_SLEEP (see the module docstring)."""
    marker = os.environ.get("TINY_TRAINER_FAIL_ONCE")
    if marker:
        path = Path(marker)
        if not path.exists():
            try:
                path.write_text("tiny_trainer failed once here\n")
            except OSError as err:
                raise TrainerError(
                    f"TINY_TRAINER_FAIL_ONCE={marker}: cannot create it ({err.strerror})"
                ) from None
            print(
                f"tiny_trainer: failing once on purpose (marker {marker} created)", file=sys.stderr
            )
            raise SystemExit(3)
    pause = os.environ.get("TINY_TRAINER_SLEEP")
    if pause:
        try:
            seconds = float(pause)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise TrainerError(f"TINY_TRAINER_SLEEP={pause!r} is not a number of seconds >= 0")
        time.sleep(seconds)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"tiny_trainer: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tiny_trainer.py",
        description="Train a character n-gram model on a data mixture and write its held-out "
        "losses (nats per character) as one row of bayesmix's tidy run table.",
    )
    parser.add_argument("--run", help="run id written in the result's run column")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--mixture-file", help="JSON file {domain: share}")
    group.add_argument("--mixture", help="JSON text {domain: share}")
    parser.add_argument("--out", help="result CSV (written atomically)")
    parser.add_argument(
        "--tokens",
        type=int,
        default=DEFAULT_TOKENS,
        help=f"training characters (default {DEFAULT_TOKENS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument(
        "--order", type=int, default=DEFAULT_ORDER, help=f"n-gram order (default {DEFAULT_ORDER})"
    )
    parser.add_argument(
        "--n-params",
        type=int,
        help="the model size as the loop names it ({n_params} of bayesmix run's template): the "
        "n-gram order (sets --order); the result gets an n_params column",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help=f"training steps of {CHUNK} characters ({{steps}} of the template; sets --tokens)",
    )
    parser.add_argument("--list-domains", action="store_true", help="print the domain names")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_domains:
        print("\n".join(DOMAINS))
        return 0
    try:
        missing = [
            opt
            for opt, value in (("--run", args.run), ("--out", args.out))
            if value is None or value == ""
        ]
        if args.mixture is None and args.mixture_file is None:
            missing.append("--mixture-file or --mixture")
        if missing:
            raise TrainerError(f"missing {', '.join(missing)}")
        shares = _read_mixture(args)
        if args.n_params is not None:
            _check_int("--n-params", args.n_params, 1, MAX_ORDER)
            args.order = args.n_params
        if args.steps is not None:
            _check_int("--steps", args.steps, 1, MAX_TOKENS // CHUNK)
            args.tokens = args.steps * CHUNK
        _check_int("--tokens", args.tokens, 1, MAX_TOKENS)
        _check_int("--order", args.order, 1, MAX_ORDER)
        _check_int("--seed", args.seed, 0, MAX_SEED)
        _test_hooks()
        start = time.perf_counter()
        losses = train(shares, args.tokens, seed=args.seed, order=args.order)
    except TrainerError as err:
        print(f"tiny_trainer: error: {err}", file=sys.stderr)
        return 2
    try:
        write_result(Path(args.out), args.run, args.tokens, shares, losses, args.n_params)
    except OSError as err:
        print(f"tiny_trainer: error: cannot write --out {args.out} ({err})", file=sys.stderr)
        return 1
    took = time.perf_counter() - start
    summary = ", ".join(f"{d} {v:.4f}" for d, v in losses.items())
    print(
        f"run {args.run}: {args.tokens} characters in {took:.1f} s; held-out nats/char: {summary}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
