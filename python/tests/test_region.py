# SPDX-License-Identifier: MIT
"""test_region.py: regions, mappings (buffer protocol, read-only sharing, no close under live views), publication by name across fork, semaphores, and memport.names()."""

import os

import pytest

import memport
from conftest import PEER_TIMEOUT


def test_region_map_write_read():
    with memport.Region(1 << 16) as r:
        assert r.size >= 1 << 16
        with r.map() as m:
            mv = memoryview(m)
            assert not mv.readonly and mv.nbytes == r.size
            mv[:5] = b"hello"
            mv.release()
            with r.map(readonly=True) as ro:
                v = memoryview(ro)
                assert v.readonly
                assert v[:5].tobytes() == b"hello"  # two mappings of the same pages
                v.release()


def test_region_readonly_handle():
    with memport.Region(4096) as r:
        with r.readonly() as ro:
            with pytest.raises((memport.PermissionDenied, memport.Error, ValueError)):
                ro.map()
            with ro.map(readonly=True) as m:
                with memoryview(m) as v:
                    assert v.readonly


def test_mapping_close_with_live_view():
    with memport.Region(4096) as r:
        m = r.map()
        v = memoryview(m)
        with pytest.raises(BufferError):
            m.close()
        v[0] = 1  # still mapped
        v.release()
        m.close()
        with pytest.raises(ValueError):
            memoryview(m)


def test_mapping_numpy_shares_memory():
    np = pytest.importorskip("numpy")
    with memport.Region(1 << 20) as r:
        m = r.map()
        a1 = np.frombuffer(m, dtype=np.uint8)
        a2 = np.frombuffer(m, dtype=np.uint8)
        assert np.shares_memory(a1, a2)  # two exports, one mapping
        a1[123] = 42
        assert a2[123] == 42
        del a1, a2
        m.close()


def test_region_publish_open_across_fork(name, children):
    r = memport.Region(1 << 16)
    pub = r.publish(name)
    m = r.map()

    def child():
        # A publication gives peers of the same user a read-only handle (memport_region_publish).
        with memport.Region.open(name, timeout=PEER_TIMEOUT) as r2:
            with pytest.raises(memport.Error):
                r2.map()
            with r2.map(readonly=True) as m2:
                with memoryview(m2) as v:
                    assert v.readonly
                    assert v[:4].tobytes() == b"ping"
                    while v[4:8].tobytes() != b"more":  # the publisher's later writes show up
                        pass

    with memoryview(m) as v:
        v[:4] = b"ping"
        c = children(child)
        v[4:8] = b"more"
    c.expect_ok()
    pub.close()
    m.close()
    r.close()


def test_names_lists_our_service(name):
    with memport.Service(name):
        entries = memport.names()
        assert isinstance(entries, list)
        mine = [e for e in entries if e["name"] == name]
        assert len(mine) == 1
        assert mine[0]["kind"] == "service"
        assert mine[0]["pid"] == os.getpid()
        assert mine[0]["uid"] == os.getuid()
    assert not [e for e in memport.names() if e["name"] == name]


def test_names_topic_kind(name):
    with memport.Publisher(name):
        mine = [e for e in memport.names() if e["name"] == name]
        assert len(mine) == 1 and mine[0]["kind"] == "topic"


def test_semaphore_counts():
    with memport.Semaphore(2) as s:
        assert s.try_wait() is True
        s.wait(timeout=0)
        assert s.try_wait() is False
        with pytest.raises(memport.Timeout):
            s.wait(timeout=0.02)
        s.post()
        s.wait(timeout=PEER_TIMEOUT)
        s.post_all()  # nobody waits: no error


def test_semaphore_across_fork(children):
    s = memport.Semaphore(0)
    done = memport.Semaphore(0)

    def child():
        s.wait(timeout=PEER_TIMEOUT)
        done.post()

    c = children(child)
    s.post()
    done.wait(timeout=PEER_TIMEOUT)
    c.expect_ok()


def test_publication_close_removes_the_name(name):
    r = memport.Region(4096)
    p = r.publish(name)
    with memport.Region.open(name, timeout=PEER_TIMEOUT) as r2:
        assert r2.size == r.size
    p.close()
    with pytest.raises(memport.NotFound):
        memport.Region.open(name, timeout=0)
    r.close()


def _named(name):
    return [e for e in memport.names() if e["name"] == name]


def test_dealloc_gives_names_back(name):
    """Objects dropped without close(): their names go too (dealloc closes)."""
    import gc

    s = memport.Service(name + "-s")
    p = memport.Publisher(name + "-p")
    r = memport.Region(4096)
    pb = r.publish(name + "-r")
    assert _named(name + "-s") and _named(name + "-p") and _named(name + "-r")
    del s, p, pb
    gc.collect()
    assert not _named(name + "-s") and not _named(name + "-p") and not _named(name + "-r")
    memport.Service(name + "-s").close()  # the name is free again
    r.close()
