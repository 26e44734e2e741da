"""Writing output files safely: one atomic writer and one output-path check for every command.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_path`: the data goes to a
  temporary file in the target's folder (created with mode ``0666 & ~umask``, like ``open``),
  is flushed to disk, then ``os.replace``-d over the target. A failed write removes the
  temporary file and leaves any old file untouched; the error is a one-line
  :class:`~bayesmix.errors.WriteError` naming the path.
* :func:`check_output_path`: before any long computation, refuse an output path that is a
  folder, that is one of the inputs (same resolved path, or the same file through a symlink or
  hard link), that already exists (unless ``force``), or whose folder cannot be written.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from bayesmix import errors

PathLike = str | os.PathLike


#: Longest file or folder name, in bytes, of the common file systems (ext4, XFS, APFS, NTFS).
NAME_MAX = 255


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _write_error(path: Path, err: OSError) -> errors.WriteError:
    reason = err.strerror or type(err).__name__
    return errors.WriteError(
        f"cannot write the file ({reason})",
        source=str(path),
        hint="check the folder's permissions and free space; nothing was replaced",
    )


@contextlib.contextmanager
def atomic_path(path: PathLike, *, suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer that needs a file name (NetCDF,
    matplotlib); on success it replaces ``path``, on any error it is removed.

    ``suffix``: the temporary name ends in ``path``'s suffix (writers that pick the format from
    it). The temporary file exists (empty, mode ``0666 & ~umask``) when the block starts.
    """
    path = Path(path)
    tmp = _temp_name(path)
    if suffix:
        tmp = tmp.with_name(tmp.name + path.suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mode 0o666 through os.open: the kernel applies the umask (mkstemp would give 0600)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise _write_error(path, err) from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            raise _write_error(path, err) from None
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: equal resolved paths, or (both existing) the
    same inode, which also catches hard links."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(
    path: PathLike,
    *,
    inputs: Iterable[PathLike | None] = (),
    force: bool = False,
    option: str = "-o",
    suffixes: tuple[str, ...] | None = None,
) -> Path:
    """Check an output path before any work; return it as a Path.

    Refused (:class:`~bayesmix.errors.OutputPathError`, one line): a folder; a file whose
    parent is a file; an unsupported suffix (when ``suffixes`` is given); one of ``inputs`` or a
    path inside an input folder (always, even with ``force``); an existing file unless
    ``force``; a folder in which a file cannot be created (tried with a probe file, so read-only
    file systems and ACLs count too).
    """
    path = Path(path)
    if str(path) == "" or path.name in ("", ".", ".."):
        raise errors.OutputPathError(
            f"{option} {str(path)!r} is not a file name", hint="give a file name"
        )
    too_long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if too_long:
        raise errors.OutputPathError(
            f"{option}: a name in the path is {len(os.fsencode(too_long[0]))} bytes long; "
            f"file systems allow {NAME_MAX}",
            hint="choose a shorter name",
        )
    if path.is_dir():
        raise errors.OutputPathError(f"{option} {path} is a directory", hint="give a file name")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise errors.OutputPathError(
            f"{option} {path}: unknown output format {path.suffix or '(no suffix)'!r}",
            hint=f"use a file ending in {' or '.join(suffixes)}",
        )
    for item in inputs:
        if item is None:
            continue
        inp = Path(item)
        inside = False
        try:
            inside = inp.is_dir() and inp.resolve() in path.resolve().parents
        except (OSError, RuntimeError):
            pass
        if inside or same_file(path, inp):
            raise errors.OutputPathError(
                f"{option} {path} would overwrite input {item}: refusing to overwrite an input",
                hint="write the output somewhere else",
            )
    if path.exists() and not force:
        raise errors.OutputPathError(
            f"{option} {path} already exists",
            hint="pass --force to replace it, or choose another name",
        )
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise errors.OutputPathError(f"{option} {path}: {parent} is a file, not a folder")
    if parent is not None:
        problem = _probe(parent)
        if problem:
            raise errors.OutputPathError(
                f"{option} {path}: cannot write in folder {parent} ({problem})",
                hint="choose a folder you can write to",
            )
    return path


def _probe(folder: Path) -> str | None:
    """None when a file can be created in ``folder`` (tried, then removed), else the reason."""
    probe = folder / f".bayesmix-probe.{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        return err.strerror or type(err).__name__
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def check_distinct_outputs(paths: Iterable[tuple[str, PathLike | None]]) -> None:
    """Refuse two outputs of one command that name the same file (``(option, path)`` pairs)."""
    seen: list[tuple[str, Path]] = []
    for option, p in paths:
        if p is None:
            continue
        for other_option, other in seen:
            if same_file(p, other):
                raise errors.OutputPathError(f"{option} {p} is also the {other_option} output")
        seen.append((option, Path(p)))


def json_safe(obj):
    """``obj`` with NaN/inf floats replaced by None and NumPy scalars made plain (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
