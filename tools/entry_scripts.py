"""Write the installed commands' entry scripts, and byte-compile what they import.

Run by tools/install.sh (`make install`) and by bench/run.py (which builds its installed
form with tools/install.sh, so the bench measures exactly what `make install` lays out),
always with the venv's own interpreter, after `pip install .`:

    VENV/bin/python -I tools/entry_scripts.py --venv VENV --final FINAL [--expect NAMES]

(not with -S: Python 3.11 learns that it runs in a venv from `site`, which reads
pyvenv.cfg; without it sys.prefix and sysconfig's paths are the base interpreter's).

VENV is where the venv is now (under DESTDIR when staging), FINAL where it will be run
from (PREFIX/venv): every path written into a script names FINAL.

Why not pip's console scripts (docs/performance.md, section 2): pip's wrapper runs
`import re` (to strip a Windows suffix from argv[0]) and runs under `site`, which on
Debian loads sitecustomize (the apport hook) and the .pth files of site-packages
(setuptools' distutils-precedence.pth): about 7 ms or more of every cron job's `sendmail`,
before a line of ours runs. Ours are, for each console script the installed distribution
declares in its entry_points.txt:

    #!FINAL/bin/python -IS
    import sys
    sys.path.append('FINAL/lib/python3.11/site-packages')
    from relay.cli import sendmail_main
    sys.exit(sendmail_main())

- `-IS` is one word: Linux passes everything after the interpreter on a #! line as ONE
  argument. `-S`: no `site` (no sitecustomize, no .pth files, no user site); the
  site-packages directory, computed here and absolute, is appended instead (after the
  standard library, where `site` would put it). `-I`: PYTHONPATH, PYTHONSTARTUP,
  PYTHONWARNINGS and every other PYTHON* variable, the user's site directory and the
  current directory are ignored, so a cron job or a user's environment cannot change
  which code runs. Our own variables (MAILX_RELAY_DEBUG, RELAY_CONFIG...) are read from
  os.environ as before: -I does not touch the environment, only Python's use of it.
- No command reads argv[0] (each passes its own name to relay.entry.run), so `mail` and
  `mailx`, one entry point, behave the same whatever name ran them, as with pip's scripts.
- The modules are byte-compiled here, timestamp-checked (not hash-checked: a
  SOURCE_DATE_EPOCH in the environment would make compileall write checked-hash files,
  whose source is read and hashed at every import), so that no command ever compiles at
  run time (a non-root user could not write the .pyc: it would compile every time). With
  DESTDIR they are all compiled again with the final paths in them (tracebacks name
  PREFIX, not the staging directory). `-I` does not stop the use of .pyc files.
- A #! line longer than the kernel reads (255 bytes on older kernels) or an interpreter
  path with white space in it cannot work: the script then starts with /bin/sh, which
  execs the interpreter (pip's own fallback; one exec more).
"""

from __future__ import annotations

import compileall
import configparser
import py_compile
import sys
import sysconfig
from pathlib import Path

#: Linux before 5.1 read 128 bytes of a #! line, 5.1 and later 256 (BINPRM_BUF_SIZE).
SHEBANG_MAX = 127
DISTRIBUTION = "mailx_relay"
USAGE = "usage: VENV/bin/python -I entry_scripts.py --venv VENV [--final FINAL] [--expect NAMES]"


class Failure(Exception):
    """What the caller is told, one line, exit status 1."""


def site_dirs(venv: Path) -> list[Path]:
    """The venv's site-packages directories (purelib, platlib), as this interpreter has them."""
    here = Path(sys.prefix).resolve()
    if here != venv.resolve():
        raise Failure(f"run this with {venv}/bin/python, not {sys.executable} ({here})")
    found: list[Path] = []
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key])
        if path.is_dir() and path.resolve() not in [p.resolve() for p in found]:
            found.append(path)
    if not found:
        raise Failure(f"no site-packages directory in {venv}")
    return found


def entry_points(dirs: list[Path]) -> dict[str, tuple[str, str]]:
    """name -> (module, attribute) of the console scripts the distribution declares."""
    infos = [info for d in dirs for info in d.glob(f"{DISTRIBUTION}-*.dist-info")]
    if len(infos) != 1:
        raise Failure(f"expected one {DISTRIBUTION}-*.dist-info in {dirs}, found {len(infos)}")
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # names keep case
    parser.read(infos[0] / "entry_points.txt", encoding="utf-8")
    if not parser.has_section("console_scripts"):
        raise Failure(f"{infos[0]}/entry_points.txt declares no console_scripts")
    found = {}
    for name, value in parser.items("console_scripts"):
        module, sep, attr = value.partition(":")
        attr = attr.split("[")[0].strip()  # extras, `fn [extra]`, change nothing here
        module = module.strip()
        if (
            not sep
            or not all(part.isidentifier() for part in module.split("."))
            or not all(part.isidentifier() for part in attr.split("."))
            or "/" in name
            or name.startswith(".")
        ):
            raise Failure(f"console script {name} = {value}: not module:function")
        found[name] = (module, attr)
    return found


def script_text(python: str, paths: list[str], module: str, attr: str) -> str:
    """The script that runs `module:attr` with `python -I -S` and `paths` on sys.path."""
    for path in [python, *paths]:
        if "\n" in path or "\r" in path or "\0" in path:
            raise Failure(f"a path with a line break in it: {path!r}")
    first, _, rest = attr.partition(".")
    call = f"{first}.{rest}" if rest else first
    shebang = f"#!{python} -IS"
    body = (
        "# Written by mailx-relay's tools/entry_scripts.py (make install): -I -S, no site,\n"
        "# no PYTHON* variables, no pip wrapper (README, Install).\n"
        "import sys\n"
        + "".join(f"sys.path.append({path!r})\n" for path in paths)
        + f"from {module} import {first}\n"
        f"sys.exit({call}())\n"
    )
    if len(shebang.encode()) <= SHEBANG_MAX and not any(c.isspace() for c in python):
        return f"{shebang}\n{body}"
    # The shell reads the first two lines as `exec python -IS "$0" "$@"`; Python reads them
    # as a comment and a string.
    quoted = "'" + python.replace("'", "'\"'\"'") + "'"
    if "'''" in quoted:
        raise Failure(f"cannot quote the interpreter path {python!r}")
    return f"#!/bin/sh\n'''exec' {quoted} -IS \"$0\" \"$@\"\n' '''\n{body}"


def write_scripts(venv: Path, final: Path, expect: set[str] | None) -> list[str]:
    dirs = site_dirs(venv)
    points = entry_points(dirs)
    if expect is not None and set(points) != expect:
        raise Failure(
            f"the package declares the commands {sorted(points)}, tools/install.sh "
            f"expects {sorted(expect)}: make them agree"
        )
    python = str(final / "bin" / "python")
    paths = [str(final / d.relative_to(venv)) for d in dirs]
    for name, (module, attr) in sorted(points.items()):
        target = venv / "bin" / name
        temporary = target.with_name(f".{name}.new")
        temporary.write_text(script_text(python, paths, module, attr), encoding="utf-8")
        temporary.chmod(0o755)
        temporary.replace(target)  # pip's script, or an earlier one of ours, replaced whole
    return sorted(points)


def compile_all(venv: Path, final: Path) -> None:
    """Every module in site-packages compiled, fresh, timestamp-checked, final paths inside."""
    staged = str(venv) != str(final)
    root = str(venv)[: -len(str(final))] if staged else None
    if staged and not str(venv).endswith(str(final)):
        raise Failure(f"{venv} is not {final} under a staging directory")
    for directory in site_dirs(venv):
        done = compileall.compile_dir(
            directory,
            quiet=1,
            force=staged,  # pip compiled them with the staging path inside
            stripdir=root if staged else None,
            prependdir="/" if staged else None,
            invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
            workers=1,
        )
        if not done:
            raise Failure(f"byte-compiling {directory} failed")


def main(argv: list[str]) -> int:
    args: dict[str, str] = {}
    rest = list(argv)
    while rest:
        option = rest.pop(0)
        if option not in ("--venv", "--final", "--expect") or not rest:
            print(USAGE, file=sys.stderr)
            return 2
        args[option] = rest.pop(0)
    try:
        venv = Path(args["--venv"]).absolute()
        final = Path(args.get("--final", str(venv)))
        if not final.is_absolute():
            raise Failure(f"--final must be an absolute path, not {final}")
        expect = set(args["--expect"].split()) if "--expect" in args else None
        names = write_scripts(venv, final, expect)
        compile_all(venv, final)
    except (Failure, OSError) as err:
        print(f"entry_scripts: error: {err}", file=sys.stderr)
        return 1
    except KeyError:
        print(USAGE, file=sys.stderr)
        return 2
    print(f"entry_scripts: {' '.join(names)} in {venv / 'bin'} (python -I -S)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
