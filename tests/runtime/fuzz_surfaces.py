"""The fuzz cases of issue #33's surfaces, mixed into tests/runtime/fuzz_harness.py's `Cases`: model files whose
float32 weights hold NaN or infinity (a ModelOutputError naming the file, never a NaN result), FIFOs, sockets,
devices and directories given as images (an ImageError, quickly), a full disk while embeddings or an index are
written (an error, with the earlier output whole and no temporary file left), and file names that are not UTF-8
(results or ImageErrors, and valid JSON wherever they are written). Each kind also runs the CLI once (twice for
the last two), in a child process, as a user would.

Every choice comes from a copy of the harness's `random.Random(seed)`, taken before any case runs: the older
kinds draw the same numbers as before these were added, and these draw the same whatever the older ones met. A
case returns the outcome it counts under when that is not "result" (an exception's class name otherwise, as in the
harness); a broken promise raises `Broken`, counted as unexpected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.embeddings_file import save_embeddings
from clipedge.runtime.errors import ModelOutputError
from clipedge.runtime.index import EmbeddingIndex
from clipedge.runtime.preprocess import preprocess

SURFACE_COUNTS = {"nan-model": 10, "special-file": 48, "disk-full": 48, "non-utf8-name": 40}
FP32_MODELS = ["image_fp32.tflite", "image_fp32.onnx", "text_fp32.tflite", "text_fp32.onnx"]
# float32 bit patterns a damaged weight can hold: quiet and signalling NaN, both infinities, the largest float
BAD_FLOATS = {"nan": 0x7FC00000, "-nan": 0xFFC00000, "snan": 0x7F800001, "inf": 0x7F800000, "-inf": 0xFF800000,
              "max": 0x7F7FFFFF}
NON_UTF8 = [b"caf\xe9.png", b"\xff\xfe-photo.jpg", b"\x80.webp", b"ok\xed\xa0\x80.gif", b"\xc3(.bmp",
            b"a\xf0\x28\x8c\x28.tiff", b"\xe9t\xe9 2024.jpeg"]
LABELS = ["cat", "dog"]
SECONDS = 20  # a case still running after this is a hang: it fails the test instead of hanging it
CLI_SECONDS = 240
PIXELS_SMALL = np.random.default_rng(3).integers(0, 256, (24, 30, 3), dtype=np.uint8)


class Broken(Exception):
    """A promise of issue #33 broken: a NaN result, a hang, a lost or half-written file, a traceback."""


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """SIGALRM after `seconds`: a blocking open() or read() is interrupted and the case ends in `Broken`."""
    def fire(signum: int, frame: Any) -> None:
        raise Broken(f"{what}: still running after {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def weight_runs(data: bytes, least: int = 256) -> list[tuple[int, int]]:
    """(offset, floats) of the runs of `least` or more plausible float32 weights (0 or 1e-6 <= |w| < 20) in a model
    file, at any of the 4 byte alignments: where a damaged float lands in a weight, not in the file's structure."""
    runs = []
    for start in range(4):
        values = np.frombuffer(data, np.float32, (len(data) - start) // 4, start)
        size = np.abs(values)
        good = np.isfinite(values) & ((size == 0) | ((size >= 1e-6) & (size < 20)))
        edges = np.flatnonzero(np.diff(np.concatenate([[0], good.astype(np.int8), [0]])))
        runs += [(start + 4 * int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)
                 if b - a >= least]
    return sorted(runs)


def say(how: str) -> None:
    print(f"  {how}", flush=True)


def run_cli(args: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    """`python -m clipedge ARGS`, or with `prelude` run first (an injected fault) the same main()."""
    command = [sys.executable, "-m", "clipedge", *args] if not prelude else [
        sys.executable, "-c", f"import sys\n{prelude}\nfrom clipedge.runtime.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, errors="surrogateescape", timeout=CLI_SECONDS)
    except subprocess.TimeoutExpired as err:
        raise Broken(f"`clipedge {' '.join(map(ascii, args))}` still running after {CLI_SECONDS} s") from err


def one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("clipedge: error: ") \
            or not all(n in lines[0] for n in needles):
        raise Broken(f"expected exit 2 and one line naming {needles}, got {result.returncode}:\n"
                     f"{result.stderr[-1500:]}")
    return lines[0]


def check_rows_file(raw: bytes, names: list[str]) -> None:
    """A rows .json: plain ASCII, valid JSON, and every name's exact bytes back through os.fsencode."""
    try:
        items = json.loads(raw.decode("ascii"))["items"]
    except (UnicodeDecodeError, ValueError, KeyError) as err:
        raise Broken(f"the rows file is not ASCII JSON with items ({err}): {raw[:300]!r}") from err
    if [os.fsencode(i) for i in items] != [os.fsencode(n) for n in names]:
        raise Broken(f"the rows file's items {items!r} are not the names written {names!r}")


class SurfaceCases:
    """Mixed into `Cases` (which gives rng, work, bundle, manifest_text, models, runtime, images)."""

    rng: Any
    srng: random.Random
    work: Path
    bundle: Path
    manifest_text: str
    models: dict[str, bytes]
    runtime: Any
    images: list[tuple[str, bytes]]

    def setup_surfaces(self) -> None:
        """Files the new kinds share, and their own generator: a copy of the seed's, so that what these cases draw
        depends on the seed alone, not on how many draws the older kinds' outcomes took, and those draw as before."""
        self.srng = random.Random()
        self.srng.setstate(self.rng.getstate())
        self.done: dict[str, int] = {}
        self.fp32 = {name: (self.bundle / name).read_bytes() for name in FP32_MODELS}
        self.runs = {name: weight_runs(data) for name, data in self.fp32.items()}
        self.photo = self.work / "photo.png"
        self.photo.write_bytes(self.images[0][1])
        special = self.work / "special"
        special.mkdir()
        os.mkfifo(special / "fifo.jpg")
        (special / "folder.jpg").mkdir()
        (special / "to-fifo.png").symlink_to(special / "fifo.jpg")
        (special / "to-zero.png").symlink_to("/dev/zero")
        (special / "dangling.png").symlink_to(special / "nothing-here.png")
        self.sock = socket.socket(socket.AF_UNIX)
        here = os.getcwd()
        os.chdir(special)  # a relative name: a socket's path is limited to 108 bytes, the temp directory is long
        try:
            self.sock.bind("socket.webp")
        finally:
            os.chdir(here)
        self.specials = [str(special / n) for n in ("fifo.jpg", "folder.jpg", "to-fifo.png", "to-zero.png",
                                                    "dangling.png", "socket.webp")]
        self.specials += ["/dev/zero", "/dev/null", "/dev/urandom", "/dev/full", "/proc/self/maps"]
        self.names = self.work / "names"
        self.names.mkdir()

    def _nth(self, kind: str) -> int:
        self.done[kind] = self.done.get(kind, -1) + 1
        return self.done[kind]

    # ---- NaN or infinity in a model's weights ------------------------------------------------------------------------
    def _damage_weights(self, name: str, all_of_a_run: bool = False) -> str:
        data = bytearray(self.fp32[name])
        offset, floats = self.srng.choice(self.runs[name])
        pattern = self.srng.choice(sorted(BAD_FLOATS))
        count = floats if all_of_a_run else min(floats, self.srng.choice([1, 1, 4, 64, 1024]))
        first = offset + 4 * self.srng.randrange(floats - count + 1)
        data[first : first + 4 * count] = np.full(count, BAD_FLOATS[pattern], "<u4").tobytes()
        manifest = json.loads(self.manifest_text)
        for artifact in manifest["artifacts"]:
            if artifact["file"] == name:  # the sha256 recomputed, as a file damaged before it was hashed
                artifact.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        (self.bundle / name).unlink()
        (self.bundle / name).write_bytes(data)
        (self.bundle / "manifest.json").write_text(json.dumps(manifest))
        return f"{name}: {count} floats at {first} set to {pattern}"

    def _undamage(self, name: str) -> None:
        (self.bundle / name).unlink()
        (self.bundle / name).write_bytes(self.fp32[name])
        (self.bundle / "manifest.json").write_text(self.manifest_text)

    def nan_model(self) -> str | None:
        name = self.srng.choice(FP32_MODELS)
        cli = self._nth("nan-model") == 0
        if cli:
            name = "image_fp32.tflite"
        say(self._damage_weights(name, all_of_a_run=cli))
        fmt = name.rsplit(".", 1)[1]
        try:
            if cli:
                return self._nan_cli(fmt)
            runtime = load(self.bundle, format=fmt, precision="fp32")
            call = self.srng.choice(["embed", "classify"])
            with deadline(SECONDS * 3, name):
                if call == "classify":
                    out = runtime.classify([PIXELS_SMALL], LABELS)
                    values = np.array([[p for _, p in r.ranked()] for r in out], np.float64)
                elif name.startswith("text"):
                    values = runtime.encode_texts(["a photo of a dog", "x"])
                else:
                    values = runtime.encode_images([PIXELS_SMALL, PIXELS_SMALL[::-1]])
            if not np.isfinite(values).all():
                raise Broken(f"{call} with {name} gave NaN or infinity, not a ModelOutputError: {values!r:.300}")
            return None  # damaged weights that this input never multiplies: a finite result is right
        except ModelOutputError as err:
            if name not in str(err):
                raise Broken(f"the ModelOutputError does not name {name}: {err}") from err
            raise
        finally:
            self._undamage(name)

    def _nan_cli(self, fmt: str) -> str:
        result = run_cli(["classify", str(self.photo), "--labels", *LABELS, "--json", "--bundle", str(self.bundle),
                          "--format", fmt, "--precision", "fp32"])
        one_error_line(result, "image_fp32.tflite", "NaN or infinity")
        if "nan" in result.stdout.lower() or "inf" in result.stdout.lower():
            raise Broken(f"the CLI printed NaN or infinity: {result.stdout[-500:]}")
        return "cli-exit-2"

    # ---- FIFOs, sockets, devices, directories as images --------------------------------------------------------------
    def special_file(self) -> str | None:
        if self._nth("special-file") == 0:
            return self._special_cli()
        path = self.srng.choice(self.specials)
        source = self.srng.choice([path, Path(path)])
        call = self.srng.choice(["preprocess", "encode", "encode-exact", "classify", "index"])
        say(f"{call} {path}")
        with deadline(SECONDS, f"{call} {path}"):
            try:
                if call == "preprocess":
                    preprocess(source)
                elif call.startswith("encode"):
                    self.runtime.encode_images([PIXELS_SMALL, source], decode=call[7:] or "fast")
                elif call == "classify":
                    self.runtime.classify([source], LABELS)
                else:
                    EmbeddingIndex.build(self.runtime, [self.photo, source])
            finally:
                self._unblock_fifo()
        raise Broken(f"{call} {path} gave a result, not an ImageError")

    def _unblock_fifo(self) -> None:
        """A reader a hang left blocked in open() on the FIFO is freed by a writer that comes and goes."""
        with contextlib.suppress(OSError):
            os.close(os.open(self.work / "special" / "fifo.jpg", os.O_WRONLY | os.O_NONBLOCK))

    def _special_cli(self) -> str:
        given = [s for s in self.specials if "folder" not in s and "dangling" not in s]
        result = run_cli(["classify", str(self.photo), *given, "--labels", *LABELS, "--on-error", "skip", "--json",
                          "--bundle", str(self.bundle)])
        try:
            payload = json.loads(result.stdout)
            skipped = [item["image"] for item in payload if "error" in item]
        except (ValueError, TypeError, KeyError) as err:
            raise Broken(f"exit {result.returncode}, no JSON ({err}):\n{result.stderr[-1500:]}") from err
        if result.returncode != 0 or "Traceback" in result.stderr or skipped != given:
            raise Broken(f"exit {result.returncode}, skipped {skipped}, not {given}:\n{result.stderr[-1500:]}")
        return "cli-skipped"

    # ---- file names that are not UTF-8 -------------------------------------------------------------------------------
    def _name_file(self, raw: bytes, valid: bool) -> str:
        path = os.fsdecode(os.path.join(os.fsencode(self.names), raw))
        data = self.srng.choice(self.images)[1] if valid else self.srng.choice([b"", b"not an image", bytes(300)])
        Path(path).write_bytes(data)
        return path

    def non_utf8_name(self) -> str | None:
        nth = self._nth("non-utf8-name")
        if nth < 2:
            return self._names_cli(["classify", "embed"][nth])
        paths = [self._name_file(raw, self.srng.random() < 0.7) for raw in self.srng.sample(NON_UTF8, 2)]
        call = self.srng.choice(["preprocess", "encode", "classify", "rows", "index"])
        say(f"{call} {ascii(paths)}")
        sources = [self.srng.choice([p, Path(p)]) for p in paths]
        with deadline(SECONDS, call):
            if call == "preprocess":
                preprocess(sources)
            elif call == "encode":
                self.runtime.encode_images(sources)
            elif call == "classify":
                self.runtime.classify(sources, LABELS)
            elif call == "rows":  # the rows file of `embed -o`, with such names as its items
                vectors = np.eye(2, 32, dtype=np.float32)
                out = self.work / "names-out" / "e.npy"
                save_embeddings(out, vectors, paths, "image", {"sha256": "0" * 64})
                check_rows_file(out.with_suffix(".json").read_bytes(), paths)
            else:
                index = EmbeddingIndex.build(self.runtime, sources)
                index.save(self.work / "names-index")
                items = EmbeddingIndex.load(self.work / "names-index").items
                if [os.fsencode(i) for i in items] != [os.fsencode(os.path.abspath(p)) for p in paths]:
                    raise Broken(f"the index's items {items!r} are not the files {paths!r}")
        return None

    def _names_cli(self, command: str) -> str:
        good = [self._name_file(raw, True) for raw in NON_UTF8[:3]]
        bad = [self._name_file(raw, False) for raw in NON_UTF8[3:5]]
        out = self.work / "names-cli" / "e.npy"
        args = [command, *good, *bad, "--on-error", "skip", "--bundle", str(self.bundle)]
        result = run_cli([*args, "--labels", *LABELS, "--json"] if command == "classify" else [*args, "-o", str(out)])
        if result.returncode != 0 or "Traceback" in result.stderr:
            raise Broken(f"clipedge {command} on names that are not UTF-8: exit {result.returncode}\n"
                         f"{result.stderr[-1500:]}")
        if command == "embed":
            check_rows_file(out.with_suffix(".json").read_bytes(), good)
            return "cli-result"
        try:
            payload = json.loads(result.stdout)
        except ValueError as err:
            raise Broken(f"classify --json printed no valid JSON ({err}): {result.stdout[:500]!r}") from err
        shown = [(os.fsencode(item["image"]), "error" in item) for item in payload]
        if shown != [(os.fsencode(p), p in bad) for p in good + bad]:
            raise Broken(f"classify --json named {shown}, not the files given")
        return "cli-result"

