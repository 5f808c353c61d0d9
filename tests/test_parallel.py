"""Data-parallel WAGE (``wage_jax.parallel``): 1, 2 and 8 devices train bit-identically to one device.

The multi-device runs happen in one subprocess (``tests/_parallel_worker.py``) with 8 virtual CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), so this pytest process keeps its single
device. The worker trains an MLP (64 -> 96 -> 10) for 50 steps on sklearn digits, batch 64, with the
single-device ``make_train_step`` and with the data-parallel step on 1, 2 and 8 devices; here the
final accumulators and the per-step logits are compared bit for bit. Two more subprocesses form a
2-process ``jax.distributed`` job (2 devices each, gloo collectives over localhost) to check the
multi-host path (``make_array_from_process_local_data``) the same way for 20 steps. The same worker
trains the layers' integer mode (``integer=True``: int8 operands, int32 sums) on 8 devices, the MLP in
both modes and a small conv net for 5 steps, against the single-device float path, and writes the
integer steps' StableHLO and compiled HLO.

Why bit-identity is possible at all (the bound the comparison rests on): the weight gradient ``x^T e``
sums over the batch, which the 8-device step splits into per-device partial sums and an all-reduce,
i.e. a different order of additions. With 8-bit activations and errors both operands are multiples of
``2^-7`` with magnitude ``< 1``, so each product is a multiple of ``2^-14`` of magnitude ``< 1`` and
every partial sum is a multiple of ``2^-14`` of magnitude ``< BATCH``: exact in float32 (24-bit
significand) in any order while ``BATCH * 2^14 <= 2^24`` (here 64 * 2^14 = 2^20). The maxima (error
``shift``, QG's shift) are integer maxima, exact in any order. The loss is a float sum that nothing
downstream uses; it may differ in its last bits between device counts and is compared with a tolerance.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wage_jax import parallel
from wage_parity.testing import f32_bits, python_env, run_python

# The 8-device worker and the two-process run are minutes of compilation: the whole module is slow.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEVICE_COUNTS = (1, 2, 8)  # 4 adds no case that 2 and 8 miss; each count is a compile
BATCH, BITS_A, BITS_E, BITS_W = 64, 8, 8, 2  # must match tests/_parallel_worker.py (checked below)
N_LEAVES = 2  # the MLP's two dense kernels
# the integer mode's 8-device runs: tag -> (results key, reference key, products in a step)
INTEGER_RUNS = {
    "integer_mlp_nearest": ("integer/nearest/8", "nearest/ref", 5),  # 2 layers x 3, less the first's input grad
    "integer_mlp_stochastic": ("integer/stochastic/8", "stochastic/ref", 5),
    "integer_conv": ("integer/conv/8", "conv/ref", 8),  # 2 convs and a dense layer
}


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel")
    env = python_env(pythonpath=[ROOT], devices=8, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    proc = run_python([ROOT / "tests" / "_parallel_worker.py", out], cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout}\n{proc.stderr}"
    results = dict(np.load(out / "results.npz"))
    meta = json.loads((out / "meta.json").read_text())
    hlo = {n: (out / f"hlo_{n}.txt").read_text() for n in (1, 8, "naive8", *INTEGER_RUNS)}
    hlo.update({f"stablehlo_{n}": (out / f"stablehlo_{n}.txt").read_text() for n in INTEGER_RUNS})
    return results, meta, hlo


@pytest.fixture(scope="module")
def multihost(tmp_path_factory):
    """Two processes (``jax.distributed`` on localhost, gloo CPU collectives) with 2 devices each."""
    out = tmp_path_factory.mktemp("multihost")
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = python_env(pythonpath=[ROOT], devices=2, JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "_parallel_worker.py"), "--multihost", str(out), str(i), "2",
             str(port)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, f"process {i} failed:\n{logs[i]}"
    return [dict(np.load(out / f"multihost_{i}.npz")) for i in range(2)]


def _differing(results, tag_a: str, tag_b: str) -> list[int]:
    """Differing elements per accumulator (by bit pattern) between two runs."""
    return [
        int((f32_bits(results[f"{tag_a}/leaf{i}"]) != f32_bits(results[f"{tag_b}/leaf{i}"])).sum())
        for i in range(N_LEAVES)
    ]


def test_worker_settings_keep_the_sums_exact():
    from tests import _parallel_worker as w

    assert w.BATCH == BATCH and w.STEPS >= 50 and 64 <= w.HIDDEN <= 128
    for cfg in w.CONFIGS.values():
        assert (cfg.bits_A, cfg.bits_E, cfg.bits_W) == (BITS_A, BITS_E, BITS_W)
    assert BATCH % 8 == 0
    # Weight-gradient sums: BATCH terms on the 2^-(A-1) * 2^-(E-1) grid, each of magnitude <= 1.
    assert BATCH * 2 ** (BITS_A - 1) * 2 ** (BITS_E - 1) <= 2**24


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
@pytest.mark.parametrize("n", DEVICE_COUNTS)
def test_device_count_gives_the_single_device_result_bit_for_bit(worker, mode, n):
    """``make_data_parallel_train_step`` on ``n`` devices == ``make_train_step`` on one, every bit."""
    results, _, _ = worker
    differ = _differing(results, f"{mode}/{n}", f"{mode}/ref")
    assert differ == [0] * N_LEAVES, f"{mode}, {n} devices: accumulators differ in {differ} elements"
    logits_differ = int((f32_bits(results[f"{mode}/{n}/logits"]) != f32_bits(results[f"{mode}/ref/logits"])).sum())
    assert logits_differ == 0, f"{mode}, {n} devices: logits differ in {logits_differ} elements"
    # The loss is a float sum reduced in a device-count-dependent order: equal up to rounding.
    np.testing.assert_allclose(results[f"{mode}/{n}/loss"], results[f"{mode}/ref/loss"], rtol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_device_counts_agree_with_each_other(worker, mode):
    results, _, _ = worker
    for n in DEVICE_COUNTS[1:]:
        differ = _differing(results, f"{mode}/{n}", f"{mode}/1")
        assert differ == [0] * N_LEAVES, f"{mode}: {n} vs 1 device differ in {differ} elements"


def test_runs_trained_and_stochastic_mode_used_its_randomness(worker):
    results, _, _ = worker
    for mode in ("nearest", "stochastic"):
        loss = results[f"{mode}/ref/loss"]
        assert loss[-10:].mean() < 0.5 * loss[:5].mean(), f"{mode}: loss did not fall: {loss}"
    # Stochastic G and E rounding changed the trajectory (else the stochastic comparison proves nothing new).
    assert sum(_differing(results, "stochastic/ref", "nearest/ref")) > 100


def test_naive_data_parallelism_diverges(worker):
    """The control: per-device error shifts (``shard_map`` + ``psum`` of the gradients) change the result.

    This shows the comparison above can fail, and that the global ``max|e|`` matters.
    """
    results, _, _ = worker
    differ = _differing(results, "nearest/naive8", "nearest/ref")
    assert sum(differ) > 100, f"naive 8-device training differs in only {differ} elements"


def test_random_values_do_not_depend_on_sharding_under_either_threefry_setting(worker):
    """With ``jax_threefry_partitionable`` off, 1 and 8 devices still agree, but the draws are other ones."""
    results, meta, _ = worker
    assert meta["threefry_partitionable"] is True  # jax >= 0.5's default, which the package relies on not at all
    assert _differing(results, "legacy_rng/8", "legacy_rng/1") == [0] * N_LEAVES
    logits_differ = (f32_bits(results["legacy_rng/8/logits"]) != f32_bits(results["legacy_rng/1/logits"])).sum()
    assert logits_differ == 0
    steps = len(results["legacy_rng/1/loss"])
    # Step 0's logits use no randomness (W and A nearest); afterwards the QG/E draws have differed.
    later = slice(1, steps)
    legacy, stochastic = results["legacy_rng/1/logits"][later], results["stochastic/1/logits"][later]
    changed = (f32_bits(legacy) != f32_bits(stochastic)).mean()
    assert changed > 0.5


def _all_reduces(hlo: str) -> list[dict]:
    """Each all-reduce of the compiled HLO: its result types, and the combiner's root op and op_name metadata."""
    computations = {}
    for block in re.split(r"\n(?=\S)", hlo):
        m = re.match(r"%?([\w.\-]+)\s", block)
        if m:
            computations[m.group(1)] = block
    found = []
    for line in hlo.splitlines():
        m = re.search(r"=\s*(\(.*?\)|\S+)\s+all-reduce(?:-start)?\(.*to_apply=%?([\w.\-]+)", line)
        if not m:
            continue
        body = computations[m.group(2)]
        root = re.search(r"ROOT\s+\S+\s*=\s*\S+\s+([\w\-]+)\(", body).group(1)
        names = set(re.findall(r'op_name="([^"]+)"', body))
        types = re.findall(r"([a-z]\d+)\[([\d,]*)\]", m.group(1))
        found.append({"root": root, "types": types, "names": names})
    return found


def _all_reduced_shift_maxima(reduces: list[dict]) -> set[str]:
    """Quantizers whose error-shift max|e| is an all-reduce(max) of scalars (float32, or an int32 bit pattern, as
    ``wage_jax._src.exact_shift`` may compute it; its two maxima, ``max|e|`` and the NaN/Inf/subnormal flag, may
    be combined into one all-reduce of two scalars); named by the reduction's op_name metadata."""
    shifted = set()
    for r in reduces:
        scalars = r["types"] and all(t in ("s32", "f32") and dims == "" for t, dims in r["types"])
        if r["root"] == "maximum" and scalars:
            for name in r["names"]:
                q = re.search(r"(WAGEQuantizer_\d+)/(.*/)?reduce_max", name)
                if q:
                    shifted.add(q.group(1))
    return shifted


def test_compiled_hlo_reduces_over_all_devices(worker):
    """8 devices: each error shift's max and the weight-gradient sums are all-reduces over the 8 devices.

    The MLP has two quantizers whose backward shifts the error (``WAGEQuantizer_1``: hidden, bits_E;
    ``WAGEQuantizer_2``: output, bits_E); the input quantizer's bits_E is -1 (no shift).
    """
    _, _, hlo = worker
    assert "all-reduce" not in hlo[1]
    reduces = _all_reduces(hlo[8])
    assert reduces, "no all-reduce in the 8-device HLO"
    assert re.search(r"replica_groups=(\[1,8\]|\{\{0,1,2,3,4,5,6,7\}\}|mesh\['axis_0'=8)", hlo[8])
    shifted = _all_reduced_shift_maxima(reduces)
    assert shifted == {"WAGEQuantizer_1", "WAGEQuantizer_2"}, f"error-shift maxima all-reduced: {shifted}"
    summed = {
        int(np.prod([int(d) for d in dims.split(",")])) if dims else 1
        for r in reduces if r["root"] == "add" for t, dims in r["types"] if t == "f32"
    }
    from tests._parallel_worker import HIDDEN

    assert {64 * HIDDEN, HIDDEN * 10} <= summed, f"weight gradients not all-reduced (sizes {summed})"
    # The batch is never gathered onto one device.
    assert "all-gather" not in hlo[8]
    # The check can fail: the naive step's shifts reduce per shard (no all-reduce of any max).
    assert _all_reduced_shift_maxima(_all_reduces(hlo["naive8"])) == set()


def _leaves(results, tag: str) -> list[np.ndarray]:
    n = len([k for k in results if k.startswith(f"{tag}/leaf")])
    return [results[f"{tag}/leaf{i}"] for i in range(n)]


def test_the_integer_runs_stay_exact():
    """Every product of the integer runs is on integers (int8 here), and every float32 sum is exact."""
    from tests import _parallel_worker as w
    from wage_jax.integer import integer_plan

    cfg = w.CONFIGS["stochastic"]
    plans = [integer_plan("dense", (BATCH, 64), (64, w.HIDDEN), BITS_A, BITS_W, BITS_E, 1.0),
             integer_plan("dense", (BATCH, w.HIDDEN), (w.HIDDEN, 10), BITS_A, BITS_W, BITS_E, 1.0),
             integer_plan("conv", (w.CONV_BATCH, 8, 8, 1), (3, 3, 1, 8), BITS_A, BITS_W, BITS_E, 1.0),
             integer_plan("conv", (w.CONV_BATCH, 4, 4, 8), (3, 3, 8, 8), BITS_A, BITS_W, BITS_E, 1.0, strides=(2, 2)),
             integer_plan("dense", (w.CONV_BATCH, 32), (32, 10), BITS_A, BITS_W, BITS_E, 1.0)]
    assert all(all(p.values()) for p in plans), plans
    assert (cfg.bits_A, cfg.bits_E, cfg.bits_W) == (BITS_A, BITS_E, BITS_W) and w.CONV_BATCH % 8 == 0
    # the largest sum: the first conv's kernel gradient over CONV_BATCH * 8 * 8 terms of 127 * 127
    assert w.CONV_BATCH * 8 * 8 * 127 * 127 <= 2**24


@pytest.mark.parametrize("run", sorted(INTEGER_RUNS))
def test_integer_mode_on_8_devices_gives_the_single_device_float_result(worker, run):
    """``integer=True`` with ``make_data_parallel_train_step`` on 8 devices == the float path on one device."""
    results, _, _ = worker
    tag, ref, _ = INTEGER_RUNS[run]
    got, want = _leaves(results, tag), _leaves(results, ref)
    assert len(got) == len(want) == (3 if run == "integer_conv" else N_LEAVES)
    differ = [int((f32_bits(a) != f32_bits(b)).sum()) for a, b in zip(got, want, strict=True)]
    assert differ == [0] * len(want), f"{run}: accumulators differ in {differ} elements"
    assert np.array_equal(f32_bits(results[f"{tag}/logits"]), f32_bits(results[f"{ref}/logits"])), f"{run}: logits"
    np.testing.assert_allclose(results[f"{tag}/loss"], results[f"{ref}/loss"], rtol=1e-5)
    loss = results[f"{ref}/loss"]
    assert loss[-1] < loss[0], f"{run}: loss did not fall: {loss}"


def _hlo_types(hlo: str) -> dict[str, str]:
    """Each instruction's element type in compiled HLO text, by name (names are unique in a module)."""
    return dict(re.findall(r"%([\w.\-]+) = ([a-z]+\d*)\[", hlo))


@pytest.mark.parametrize("run", sorted(INTEGER_RUNS))
def test_integer_mode_hlo_on_8_devices_is_int8_into_int32(worker, run):
    """The 8-device integer step: every dot and convolution takes int8 operands into an int32 result, and the
    weight gradients' partial sums are all-reduced as int32 (exact in any order). The conv net uses the patches
    lowering, the one with int32 sums in the backward too (its products are all dots).

    The program (StableHLO, with its sharding annotations) asks for int8 x int8 -> int32 in every product.
    After XLA's SPMD partitioning every product is still an integer one with an int32 result, none on floats;
    XLA's CPU backend widens some int8 operands to int32 itself (it has no int8 convolution kernel, nor one
    for every dot layout), which the compiled HLO shows.
    """
    _, _, hlo = worker
    expected = INTEGER_RUNS[run][2]
    products = [line for line in hlo[f"stablehlo_{run}"].splitlines()
                if re.search(r"stablehlo\.(dot_general|convolution)", line)]
    assert len(products) == expected
    for line in products:
        operands, result = line.rsplit("->", 1)
        assert re.findall(r"tensor<[^>]*x(\w+)>", operands) == ["i8", "i8"], line
        assert re.search(r"tensor<[^>]*xi32>", result), line
    assert "sharding" in hlo[f"stablehlo_{run}"]
    compiled = hlo[run]
    types = _hlo_types(compiled)
    partitioned = re.findall(r"%[\w.\-]+ = (\w+)\[[\d,]*\]\S* (?:dot|convolution)\(%([\w.\-]+), %([\w.\-]+)\)",
                             compiled)
    assert len(partitioned) == expected, partitioned
    for result, lhs, rhs in partitioned:
        assert result == "s32" and {types[lhs], types[rhs]} <= {"s8", "s16", "s32"}, (result, lhs, rhs)
    assert any(types[lhs] == types[rhs] == "s8" for _, lhs, rhs in partitioned)
    summed = set()
    for r in _all_reduces(compiled):
        if r["root"] == "add":
            summed |= {(t, dims) for t, dims in r["types"] if t == "s32" and dims}
    # the conv net's patches lowering sums its kernel gradients as (kh * kw * Ci, Co) matrices, reshaped after
    kernels = {(9, 8), (72, 8), (32, 10)} if run == "integer_conv" else {(64, 96), (96, 10)}
    assert {("s32", ",".join(map(str, k))) for k in kernels} <= summed, summed
    assert re.search(r"replica_groups=(\[1,8\]|\{\{0,1,2,3,4,5,6,7\}\}|mesh\['axis_0'=8)", compiled)


def test_sharding_checks(worker):
    _, meta, _ = worker
    assert meta["shard_rows"] == [BATCH // 8] * 8 and meta["shard_rows_match"]
    for name, message in meta["errors"].items():
        assert message is not None and "divisible" in message, name


def test_data_mesh_and_argument_checks_on_one_device():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == len(jax.devices())
    for bad in (0, len(jax.devices()) + 1, 1.5, True):
        with pytest.raises(ValueError, match="n_devices"):
            parallel.data_mesh(bad)
    with pytest.raises(ValueError, match="scalar"):
        parallel.shard_batch(np.float32(1.0), mesh)
    tree = parallel.replicate({"w": jnp.ones((3, 2)), "k": jax.random.key(0), "none": None}, mesh)
    assert tree["w"].sharding.is_fully_replicated and tree["none"] is None
    bad_mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    from wage_jax import wage_sgd

    with pytest.raises(ValueError, match="'data'"):
        parallel.make_data_parallel_train_step(lambda p, x, k: x, wage_sgd(2, 8, 1.0, "nearest"), bad_mesh)


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_two_processes_give_the_single_device_result(worker, multihost, mode):
    """Multi-controller: 2 processes x 2 devices, each loading half of every batch, == one device."""
    from tests._parallel_worker import MULTIHOST_STEPS

    results, _, _ = worker
    half = BATCH // 2
    for pid, got in enumerate(multihost):
        differ = [
            int((f32_bits(got[f"{mode}/leaf{i}"]) != f32_bits(results[f"{mode}/ref@{MULTIHOST_STEPS}/leaf{i}"])).sum())
            for i in range(N_LEAVES)
        ]
        assert differ == [0] * N_LEAVES, f"{mode}, process {pid}: accumulators differ in {differ} elements"
        ref_rows = results[f"{mode}/ref/logits"][:MULTIHOST_STEPS, pid * half : (pid + 1) * half]
        assert got[f"{mode}/logits"].shape == ref_rows.shape
        assert np.array_equal(f32_bits(got[f"{mode}/logits"]), f32_bits(ref_rows)), f"{mode}, process {pid}: logits"
        np.testing.assert_allclose(got[f"{mode}/loss"], results[f"{mode}/ref/loss"][:MULTIHOST_STEPS], rtol=1e-5)
