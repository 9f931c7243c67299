"""predict_volume on a dask LocalCluster of 2 worker processes: identical output, the net sent
once per worker, a worker killed mid-run."""

import os
import signal
import threading
import time

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

from elektronn.net import volume  # noqa: E402
from elektronn.net.convnet import MixedConvNN  # noqa: E402
from elektronn.net.volume import predict_volume  # noqa: E402
from tests.net.test_volume import NETS, assert_same, build, marked, volume_for  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def net():
    return build(*NETS["3d_partial"], seed=3)


# --- run on the workers by client.run (importable, as spawned workers need) -------------------
def count_unpickled_nets():
    """Count MixedConvNN unpickling in this worker process."""
    original = MixedConvNN.__setstate__
    counter = {"n": 0}

    def counting(self, state):
        counter["n"] += 1
        original(self, state)

    MixedConvNN.__setstate__ = counting
    globals()["_counter"] = counter


def unpickled_nets():
    return globals()["_counter"]["n"]


def slow_blocks():
    """Make each block take at least 0.1 s, so that a worker can be killed mid-run."""
    fast = volume.predict_block

    def predict_block(*args, **kwargs):
        time.sleep(0.1)
        return fast(*args, **kwargs)

    volume.predict_block = predict_block


def threads_seen():
    return os.environ.get("OMP_NUM_THREADS")


def test_two_workers_give_identical_output_and_get_the_net_once(client, net, tmp_path):
    vol = volume_for(net, (30, 26, 20), seed=1, dtype=np.uint8)
    want = net.predictDense(vol, show_progress=False)
    client.run(count_unpickled_nets)
    info = predict_volume(net, vol, str(tmp_path / "o.zarr"), block_shape=(8, 7, 6),
                          client=client, show_progress=False)
    assert info["computed"] == info["blocks"] == 4 * 4 * 3
    assert_same(zarr.open_array(str(tmp_path / "o.zarr"))[:], want)
    assert len(marked(tmp_path / "o.zarr")) == 48
    counts = client.run(unpickled_nets)
    assert sorted(counts.values()) == [1, 1], counts  # once per worker, not per task
    cores = len(os.sched_getaffinity(0))
    assert set(client.run(threads_seen).values()) == {str(max(1, cores // 2))}
    # resumed on the cluster: nothing left to do
    again = predict_volume(net, vol, str(tmp_path / "o.zarr"), block_shape=(8, 7, 6),
                           client=client, show_progress=False)
    assert (again["computed"], again["skipped"]) == (0, 48)
    # a later run with the same net reuses the workers' compiled copies
    predict_volume(net, vol, str(tmp_path / "p.zarr"), block_shape=(16, 14, 12), client=client,
                   show_progress=False)
    assert_same(zarr.open_array(str(tmp_path / "p.zarr"))[:], want)
    assert sorted(client.run(unpickled_nets).values()) == [1, 1]


def test_hdf5_source_on_workers_and_explicit_threads(client, net, tmp_path):
    import h5py
    vol = volume_for(net, (20, 18, 16), seed=2)
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["raw"] = vol
    with h5py.File(tmp_path / "raw.h5", "r") as f:  # an open dataset travels as its path
        predict_volume(net, f["raw"], str(tmp_path / "o.zarr"), block_shape=(10, 9, 8),
                       client=client, show_progress=False, threads_per_worker=1, pad_raw=True)
    assert_same(zarr.open_array(str(tmp_path / "o.zarr"))[:],
                net.predictDense(vol, show_progress=False, pad_raw=True))
    assert set(client.run(threads_seen).values()) == {"1"}
    with pytest.raises(ValueError, match="HDF5.*zarr"):
        predict_volume(net, vol, f"{tmp_path}/o.h5:p", client=client, show_progress=False)
    assert not (tmp_path / "o.h5").exists()


def test_a_worker_killed_mid_run(client, net, tmp_path):
    vol = volume_for(net, (36, 30, 24), seed=4)
    want = net.predictDense(vol, show_progress=False)
    out = tmp_path / "o.zarr"
    client.run(slow_blocks)
    victim_pid = next(iter(client.run(os.getpid).values()))
    at_kill = []

    def kill_when_started():
        deadline = time.monotonic() + 300
        while len(marked(out)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(victim_pid, signal.SIGKILL)
        at_kill.append(len(marked(out)))

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    info = predict_volume(net, vol, str(out), block_shape=(6, 6, 6), client=client,
                          show_progress=False)
    killer.join()
    assert info["computed"] == info["blocks"] == 6 * 5 * 4
    assert 4 <= at_kill[0] < info["blocks"] / 2  # killed mid-run
    assert len(marked(out)) == info["blocks"]
    assert_same(zarr.open_array(str(out))[:], want)
    # the nanny restarted the worker: the cluster has two workers again
    client.wait_for_workers(2, timeout=120)
    assert victim_pid not in client.run(os.getpid).values()
