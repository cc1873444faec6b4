"""Build-time helper of images/Dockerfile, run by the builder stages' interpreter (stdlib only, Python 3.11).

  imagetool.py check-build-requires PYPROJECT   every [build-system] requirement is installed (the wheel is
                                                 built without isolation, from the hash-locked tools venv)
  imagetool.py finish-venv VENV                  strip the extensions' debug info, byte-compile for a read-only
                                                 root (hash-based .pyc: valid whatever the file times)
  imagetool.py assemble ROOTFS VENV...           the runtime root filesystem: the interpreter and the shared
                                                 libraries it and VENV's extensions load (ldd), a trimmed
                                                 standard library as .pyc only, /etc/passwd with uid 65532,
                                                 CA certificates; no shell, no package manager, no setuid bit

The final stages are FROM scratch and copy the result: the runtime holds what the three processes run and
nothing else (issue 16). Everything here keeps the builder's paths, so a venv's `home` and its bin/python
symlink chain stay valid, whichever base built it (the official python image or a debootstrapped Debian).
"""

from __future__ import annotations

import compileall
import importlib.metadata
import os
import py_compile
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

# Standard-library parts none of the three processes imports (nor their dependencies): tests, GUIs, the
# package tooling (ensurepip would bring pip's bytes back), databases, terminal UIs, the static libpython.
STDLIB_DROP = re.compile(
    r"^(test|idlelib|tkinter|turtledemo|turtle\.py|ensurepip|lib2to3|pydoc_data|distutils|venv|sqlite3|dbm|"
    r"curses|msilib|__phello__|site-packages|dist-packages|sitecustomize\.py|crypt\.py|config-3[^/]*)$"
)
DYNLOAD_DROP = re.compile(
    r"^(_test|_xxtest|xx|_ctypes_test|_tkinter|_curses|readline|_sqlite3|_dbm|_gdbm|nis|_crypt|ossaudiodev|"
    r"spwd)"
)
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"
# glibc >= 2.34 has the files and dns services built in: no libnss_*.so is needed for these.
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def check_build_requires(pyproject: Path) -> None:
    from packaging.requirements import Requirement  # in the tools venv (hatchling needs it)

    missing = []
    for spec in tomllib.loads(pyproject.read_text())["build-system"]["requires"]:
        req = Requirement(spec)
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{spec} (not installed)")
            continue
        if not req.specifier.contains(version, prereleases=True):
            missing.append(f"{spec} (locked {version})")
    if missing:
        sys.exit("images/requirements-tools.txt does not satisfy [build-system] requires: " + ", ".join(missing))


def finish_venv(venv: Path) -> None:
    # Debug info only: the dynamic symbols stay. It also removes the build paths gcc recorded, one source of
    # difference between two builds.
    extensions = sorted(str(p) for p in venv.rglob("*.so"))
    if extensions:
        subprocess.run(["strip", "--strip-debug", *extensions], check=True)
    for cache in sorted(venv.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    ok = compileall.compile_dir(
        venv, quiet=1, workers=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    if not ok:
        sys.exit(f"compileall failed in {venv}")


class Rootfs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def dst(self, path: str | Path) -> Path:
        return self.root / Path(path).relative_to("/")

    def copy(self, path: str) -> None:
        """Copy `path` from the builder, recreating every symlink on the way (/lib -> usr/lib, python ->
        python3.11, libfoo.so.1 -> libfoo.so.1.2): whatever name the loader or the venv uses resolves."""
        cur = Path("/")
        for part in Path(os.path.normpath(path)).parts[1:]:
            cur = cur / part
            out = self.dst(cur)
            if cur.is_symlink():
                link = os.readlink(cur)
                if not out.is_symlink():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.symlink_to(link)
                self.copy(os.path.normpath(cur.parent / link))
                cur = Path(os.path.realpath(cur))
            elif cur.is_dir():
                out.mkdir(mode=0o755, parents=True, exist_ok=True)
            elif not out.exists():
                self.install(cur, out)

    @staticmethod
    def install(src: Path, out: Path) -> None:
        out.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(src, out)
        # Plain modes: no setuid/setgid bit can come through.
        out.chmod(0o755 if src.stat().st_mode & stat.S_IXUSR else 0o644)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        out = self.dst(path)
        out.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        out.write_text(text)
        out.chmod(mode)


def needed_libraries(elf: Path) -> list[str]:
    out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
        elif "not found" in line:
            sys.exit(f"{elf}: {line.strip()}")
    return libs


def interpreter_chain(venv: Path) -> str:
    """The venv's bin/python symlink chain ends at the base interpreter (absolute links into the builder)."""
    link = venv / "bin" / "python"
    target = os.readlink(link)
    return target if os.path.isabs(target) else os.path.normpath(link.parent / target)


def assemble(root: Path, venvs: list[Path]) -> None:
    fs = Rootfs(root)
    stdlib = Path(sysconfig.get_paths(scheme="posix_prefix", vars={"base": sys.base_prefix})["stdlib"])
    # The venvs keep the path they had in their own stage (/opt/sluice): their interpreter link is absolute.
    interpreters = {interpreter_chain(v) for v in venvs}
    for exe in sorted(interpreters):
        fs.copy(exe)
    # The standard library, trimmed, as .pyc only: about half the bytes of source + __pycache__, and the
    # interpreter loads it without looking for a source (measured in images/README.md).
    for src in sorted(stdlib.rglob("*")):
        rel = src.relative_to(stdlib)
        if any(STDLIB_DROP.match(part) for part in rel.parts[:1]) or "__pycache__" in rel.parts:
            continue
        if rel.parts[0] == "lib-dynload" and DYNLOAD_DROP.match(src.name):
            continue
        if any(part in ("test", "tests", "idle_test") for part in rel.parts[:-1]):
            continue
        out = fs.dst(src)
        if src.is_dir():
            out.mkdir(mode=0o755, parents=True, exist_ok=True)
        elif src.suffix == ".py":
            out.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            py_compile.compile(
                str(src),
                cfile=str(out.with_suffix(".pyc")),
                dfile=str(src),
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            out.with_suffix(".pyc").chmod(0o644)
        elif (src.suffix == ".so" or src.name == "LICENSE.txt") and src.exists():  # not a dangling link
            Rootfs.install(src.resolve(), out)
    # Shared libraries: whatever the interpreter, the kept extension modules and the venvs' extensions load.
    elves = [Path(os.path.realpath(e)) for e in interpreters]
    elves += sorted(fs.dst(stdlib).rglob("*.so"))
    for venv in venvs:
        elves += sorted(venv.rglob("*.so"))
    for lib in sorted({lib for elf in elves for lib in needed_libraries(elf)}):
        fs.copy(lib)
    # The loader's cache, for libraries outside its built-in directories (the official image's
    # /usr/local/lib/libpython3.11.so).
    for conf in [Path("/etc/ld.so.conf"), *sorted(Path("/etc/ld.so.conf.d").glob("*.conf"))]:
        if conf.is_file():
            fs.write(str(conf), conf.read_text())
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    # The activator and the autoscaler verify the API server's certificate.
    fs.write(CA_BUNDLE, Path(CA_BUNDLE).read_text())
    fs.write("/etc/passwd", PASSWD)
    fs.write("/etc/group", GROUP)
    fs.write("/etc/nsswitch.conf", NSSWITCH)
    for directory in ("/tmp", "/home/nonroot"):
        fs.dst(directory).mkdir(parents=True, exist_ok=True)
    fs.dst("/tmp").chmod(0o1777)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "check-build-requires":
        check_build_requires(Path(args[0]))
    elif command == "finish-venv":
        finish_venv(Path(args[0]))
    elif command == "assemble":
        assemble(Path(args[0]), [Path(a) for a in args[1:]])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
