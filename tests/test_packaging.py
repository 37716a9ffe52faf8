"""The wheel: what it holds, and that an installed copy works on its own.

* the wheel holds the grammar as package data (`rnnc/grammars/rnn.lark`, force-included
  from the top-level `grammars/`), the bundled digits data and the `rnnc` entry point;
* installed (`pip install --no-deps`) into a fresh venv that sees the current venv's
  dependencies but NOT its editable rnnc, `rnnc compile` works from a folder outside the
  repository, and the grammar is found inside the installed package;
* the installed metadata pins onnxruntime-gpu off macOS, onnxruntime on it, and the
  `cuda` extra.

Nothing is downloaded when hatchling is importable here (the wheel is built without
build isolation); otherwise pip builds it in an isolated env, fetching hatchling, and the
tests are skipped if that is not possible.
"""
from __future__ import annotations

import configparser
import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import rnnc

REPO = Path(__file__).resolve().parents[1]
BIN = "Scripts" if os.name == "nt" else "bin"


def _clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE")}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


# ----- the wheel (built once per session) -----

@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
           "-w", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.append("--no-build-isolation")
        how = "without build isolation"
    else:  # pip fetches the build backend into an isolated env
        how = "with build isolation (hatchling not importable here)"
    print(f"\nbuilding the wheel {how}")
    try:
        p = subprocess.run(cmd + [str(REPO)], capture_output=True, text=True, timeout=180,
                           env=_clean_env())
    except subprocess.TimeoutExpired:
        pytest.skip(f"building the wheel {how} timed out")
    wheels = sorted(out.glob("rnnc-*.whl"))
    if p.returncode != 0 or len(wheels) != 1:
        if "--no-build-isolation" in cmd:  # a real build failure: hatchling was there
            pytest.fail(f"pip wheel failed:\n{p.stdout}\n{p.stderr}")
        pytest.skip(f"cannot build the wheel {how} (no hatchling, no index?): {p.stderr.strip()[-500:]}")
    return wheels[0]


def _dist_info(names: list[str]) -> str:
    infos = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    assert infos == {f"rnnc-{rnnc.__version__}.dist-info"}, infos
    return infos.pop()


def test_wheel_contents(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "rnnc/grammars/rnn.lark" in names
        assert z.read("rnnc/grammars/rnn.lark") == (REPO / "grammars" / "rnn.lark").read_bytes()
        assert "rnnc/data/digits.npz" in names
        assert "rnnc/__init__.py" in names and "rnnc/cli.py" in names and "rnnc/parser.py" in names
        info = _dist_info(names)
        eps = configparser.ConfigParser()
        eps.read_string(z.read(f"{info}/entry_points.txt").decode())
        assert eps.has_section("console_scripts")
        assert eps.get("console_scripts", "rnnc").strip() == "rnnc.cli:main"
    # only the package and its metadata: no tests, specs, venv or top-level grammars/
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"rnnc", info}, tops


def test_editable_install_reads_the_live_grammar():
    """The editable rnnc (this venv) parses with the repository's grammar, not a copy."""
    from rnnc import parser

    assert parser._grammar_text() == (REPO / "grammars" / "rnn.lark").read_text(encoding="utf-8")


# ----- the wheel installed in a fresh venv -----

def _requirement_closure(root_requires: list[str]) -> list[md.Distribution]:
    """The current venv's distributions that `root_requires` needs, transitively."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, md.Distribution] = {}
    todo = list(root_requires)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in seen or key == "rnnc":
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue  # optional at run time, or not installed here: the import will tell
        seen[key] = dist
        todo.extend(dist.requires or [])
    return list(seen.values())


def _link_dependencies(target: Path) -> list[str]:
    """Symlinks in `target` to the top-level entries (packages, modules, .libs, dist-info)
    of rnnc's run-time dependencies as installed in this venv — and nothing of rnnc."""
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    linked = []
    for dist in _requirement_closure(md.requires("rnnc") or []):
        tops = {Path(str(f)).parts[0] for f in (dist.files or [])}
        for top in sorted(tops):
            if top in ("..", "__pycache__", "rnnc") or top.endswith(".pth") or top.startswith("__editable__"):
                continue
            src = Path(dist.locate_file(top)).resolve()
            if not src.exists() or purelib not in src.parents:
                continue
            dst = target / top
            if not dst.exists():
                dst.symlink_to(src, target_is_directory=src.is_dir())
                linked.append(top)
    return linked


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory):
    """A fresh venv with the wheel installed (--no-deps) and the deps made visible."""
    if os.name == "nt":
        pytest.skip("symlinked dependency folder: POSIX only")
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120,
                   env=_clean_env())
    py = venv / BIN / "python"
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                        "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=120, env=_clean_env())
    assert p.returncode == 0, p.stdout + p.stderr

    deps = base / "deps"
    deps.mkdir()
    linked = _link_dependencies(deps)
    for needed in ("numpy", "onnx", "onnxruntime", "lark", "click"):
        assert needed in linked, f"{needed} not found among rnnc's dependencies here: {linked}"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip())
    (site / "rnnc_test_deps.pth").write_text(f"{deps}\n")
    return {"venv": venv, "python": py, "site": site, "rnnc": venv / BIN / "rnnc"}


def _run(installed, args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=_clean_env(PATH=f"{installed['venv'] / BIN}{os.pathsep}{os.environ.get('PATH', '')}"))


def test_installed_rnnc_is_the_wheel_not_the_checkout(installed, tmp_path):
    code = ("import json, sys, rnnc, importlib.resources as r; "
            "g = r.files('rnnc') / 'grammars' / 'rnn.lark'; "
            "print(json.dumps({'rnnc': rnnc.__file__, 'grammar': str(g), 'is_file': g.is_file(), "
            "'path': sys.path, 'version': rnnc.__version__}))")
    p = _run(installed, [str(installed["python"]), "-c", code], tmp_path)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    site = installed["site"].resolve()
    assert Path(info["rnnc"]).resolve().is_relative_to(site), info["rnnc"]
    assert Path(info["grammar"]).resolve().is_relative_to(site), info["grammar"]
    assert info["is_file"]
    assert info["version"] == rnnc.__version__
    assert not any(Path(e).resolve() == REPO for e in info["path"] if e), info["path"]
    assert str(REPO) not in info["rnnc"] and str(REPO) not in info["grammar"]


def test_installed_rnnc_compiles_outside_the_repo(installed, tmp_path):
    spec = tmp_path / "sine.rnn"
    shutil.copyfile(REPO / "specs" / "sine.rnn", spec)
    assert installed["rnnc"].is_file()
    p = _run(installed, [str(installed["rnnc"]), "compile", "sine.rnn", "-o", "out"], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    for name in ("infer.onnx", "eval.onnx", "train.onnx"):
        assert (tmp_path / "out" / name).is_file(), name
    # and the installed package runs what it wrote (grammar, lowering, runtime: all from the wheel)
    code = ("import numpy as np, rnnc, rnnc.runtime as rt; "
            "y = rt.run('out', {'x': np.zeros((2, 5, 1), np.float32)})['pred']; "
            "assert y.shape == (2, 5, 1), y.shape; print(rnnc.__file__)")
    p = _run(installed, [str(installed["python"]), "-c", code], tmp_path)
    assert p.returncode == 0, p.stderr
    assert Path(p.stdout.strip()).resolve().is_relative_to(installed["site"].resolve())


def test_installed_metadata_dependencies(installed, tmp_path):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    code = ("import json, importlib.metadata as m; d = m.metadata('rnnc'); "
            "print(json.dumps({'requires': m.requires('rnnc'), 'extras': d.get_all('Provides-Extra'), "
            "'name': d['Name'], 'version': d['Version'], "
            "'scripts': [(e.name, e.value) for e in m.entry_points(group='console_scripts') if e.name == 'rnnc']}))")
    p = _run(installed, [str(installed["python"]), "-c", code], tmp_path)
    assert p.returncode == 0, p.stderr
    meta = json.loads(p.stdout)
    assert meta["name"] == "rnnc" and meta["version"] == rnnc.__version__
    assert meta["scripts"] == [["rnnc", "rnnc.cli:main"]]
    assert "cuda" in (meta["extras"] or [])

    reqs = [Requirement(r) for r in meta["requires"]]

    def active(name: str, platform: str, extra: str = "") -> list[Requirement]:
        env = {"sys_platform": platform, "platform_system": {"linux": "Linux", "win32": "Windows",
                                                             "darwin": "Darwin"}[platform],
               "extra": extra}
        return [r for r in reqs if canonicalize_name(r.name) == name
                and (r.marker is None or r.marker.evaluate(env))]

    for platform in ("linux", "win32"):
        gpu = active("onnxruntime-gpu", platform)
        assert len(gpu) == 1 and not gpu[0].extras, (platform, meta["requires"])
        assert not active("onnxruntime", platform), (platform, meta["requires"])
    assert not active("onnxruntime-gpu", "darwin"), meta["requires"]
    assert len(active("onnxruntime", "darwin")) == 1, meta["requires"]

    cuda = [r for r in active("onnxruntime-gpu", "linux", "cuda") if r.extras]
    assert len(cuda) == 1 and set(cuda[0].extras) == {"cuda", "cudnn"}, meta["requires"]
    assert "extra" in str(cuda[0].marker) and "cuda" in str(cuda[0].marker)
    assert not [r for r in active("onnxruntime-gpu", "darwin", "cuda") if r.extras], \
        "the cuda extra must not pull onnxruntime-gpu on macOS"
    for dep in ("numpy", "onnx", "lark", "click"):
        assert active(dep, "linux") and active(dep, "darwin"), (dep, meta["requires"])
