"""The distribution as a user gets it: a wheel with only the project's namespaced packages, JAX-only by default.

The wheel is built from the tracked files (``pip wheel --no-deps --no-build-isolation``, no network), then
installed into fresh virtual environments whose only other packages are linked in from this environment:
- one holding just numpy, jax, flax, optax and what they require: ``wage_jax`` imports (every submodule) and
  trains; ``import wage_torch`` fails with one line saying what to install;
- one holding everything (the ``torch`` and ``train`` extras): the ``wage-train`` and ``wage-parity`` commands
  run from a directory outside the checkout.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"wage_spec", "wage_jax", "wage_torch", "wage_data", "wage_train", "wage_parity"}
CORE = {"numpy", "jax", "flax", "optax"}

# Train a few MLP steps with the public API only (run inside the fresh environments).
TRAIN_SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    import wage_jax
    for mod in pkgutil.walk_packages(wage_jax.__path__, "wage_jax."):
        importlib.import_module(mod.name)
    from wage_jax.models import MLP
    from wage_jax import clip_params, wage_sgd
    from wage_jax import make_train_step
    from wage_spec import WAGEConfig
    assert "torch" not in sys.modules and "qtorch" not in sys.modules, sorted(sys.modules)
    cfg = WAGEConfig.nearest()
    model = MLP(hidden=(32,), num_classes=10, config=cfg)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (64, 16)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, 64))
    params = model.init(jax.random.key(0), x)["params"]
    opt = wage_sgd(cfg.bits_W, cfg.bits_G, 1.0, mode=cfg.G_mode)
    params = clip_params(params, cfg.bits_W)
    state = opt.init(params)
    step = make_train_step(lambda p, xb, key: model.apply({"params": p}, xb), opt)
    losses = []
    for _ in range(5):
        params, state, loss, _ = step(params, state, x, y, None)
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    print("trained", wage_jax.__version__, losses[0], losses[-1])
    """
)


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names: set[str]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and everything they require (no extras), from this environment."""
    seen: dict[str, metadata.Distribution] = {}
    stack = list(names)
    while stack:
        name = stack.pop()
        if _key(name) in seen:
            continue
        dist = metadata.distribution(name)
        seen[_key(name)] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return list(seen.values())


def _fresh_venv(path: Path, dists: list[metadata.Distribution] | None) -> Path:
    """A venv at ``path`` without pip; ``dists`` linked into its site-packages, or (None) this env's on its path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = Path(
        subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                       capture_output=True, text=True).stdout.strip()
    )
    if dists is None:
        # Every package of this environment, as plain path entries: .pth files there (the editable install of
        # the checkout) are not processed, so the project itself comes only from the wheel installed below.
        (site / "_outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
        return python
    for dist in dists:
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops:
            src = Path(dist.locate_file(top))
            if top.endswith(".pth") or top == ".." or top.startswith("__editable__") or not src.exists():
                continue
            if not (site / top).exists():
                (site / top).symlink_to(src)
    return python


def _install(python: Path, wheel: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tracked files (the checkout stays clean)."""
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out),
         str(src)],
        check=True,
    )
    (whl,) = out.glob("wage_jax-*.whl")
    return whl


def _wheel_metadata(whl: Path) -> tuple[set[str], email.message.Message, str]:
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(f"{info}/METADATA"))
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    return tops, meta, entry_points


def test_wheel_holds_only_the_namespaced_packages(wheel: Path) -> None:
    tops, _, _ = _wheel_metadata(wheel)
    assert tops == PACKAGES
    with zipfile.ZipFile(wheel) as z:
        for package in PACKAGES:
            assert f"{package}/py.typed" in z.namelist()


def test_wheel_requires_only_jax_by_default(wheel: Path) -> None:
    _, meta, _ = _wheel_metadata(wheel)
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    core = {_key(r.name) for r in requires if r.marker is None}
    assert core == CORE
    by_extra: dict[str, set[str]] = {}
    for r in requires:
        if r.marker is not None:
            extra = re.search(r'extra == "([^"]+)"', str(r.marker)).group(1)
            by_extra.setdefault(extra, set()).add(_key(r.name))
    assert by_extra["torch"] == {"torch", "qtorch", "ninja"}
    assert {"scikit-learn", "tqdm", "matplotlib", "orbax-checkpoint", "pooch"} <= by_extra["train"]
    assert not ({"torch", "qtorch", "ninja"} & (by_extra["train"] | by_extra.get("dev", set())))


def test_wheel_entry_points(wheel: Path) -> None:
    _, _, entry_points = _wheel_metadata(wheel)
    assert "wage-train = wage_train.__main__:main" in entry_points
    assert "wage-parity = wage_parity.report:main" in entry_points
    assert "wage-data = wage_data.download:main" in entry_points


def test_jax_only_environment_trains(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv", _closure(CORE))
    _install(python, wheel)
    env = _clean_env()
    probe = subprocess.run([python, "-c", "import torch"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert probe.returncode != 0, "torch must not be importable in the JAX-only environment"
    done = subprocess.run([python, "-c", TRAIN_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("trained 0.1"), done.stdout
    no_torch = subprocess.run([python, "-c", "import wage_torch"], cwd=tmp_path, env=env, capture_output=True,
                              text=True)
    assert no_torch.returncode == 1
    last = no_torch.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: wage_torch needs torch and qtorch: install your torch build, then the "
                           'torch extra (pip install ".[torch]" in a clone of wage-jax)'), last


@pytest.mark.slow
def test_commands_work_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv", None)
    _install(python, wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    env = _clean_env(TORCH_EXTENSIONS_DIR=extensions)
    bindir = python.parent
    where = subprocess.run([python, "-c", "import wage_jax, wage_train; print(wage_jax.__file__, wage_train.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where and str(tmp_path / "venv") in where, where
    train = subprocess.run(
        [bindir / "wage-train", "--epochs", "1", "--limit-batches", "2", "--hidden", "16", "--no-progress",
         "--out-dir", str(work / "run")],
        cwd=work, env=env, capture_output=True, text=True,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert (work / "run" / "metrics.json").is_file()
    parity = subprocess.run([bindir / "wage-parity", "--function", "C", "--max-cases", "1"], cwd=work, env=env,
                            capture_output=True, text=True)
    assert parity.returncode == 0, parity.stdout[-2000:] + parity.stderr[-2000:]
    assert "OK: every element is bit-identical" in parity.stdout


def test_jax_modules_never_import_torch() -> None:
    """Every ``wage_jax`` and ``wage_spec`` module imports, and an MLP trains, with torch and qtorch blocked."""
    blocker = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "qtorch"):
                    raise ImportError(f"blocked for this test: {name}")
                return None
        sys.meta_path.insert(0, Block())
        import pkgutil, importlib, wage_spec
        for mod in pkgutil.walk_packages(wage_spec.__path__, "wage_spec."):
            importlib.import_module(mod.name)
        """
    )
    env = _clean_env(PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", blocker + TRAIN_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("trained"), done.stdout
