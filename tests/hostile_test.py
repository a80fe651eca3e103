"""The hostile-condition helpers themselves: a full disk gives ENOSPC, a read-only folder EROFS, a bounded child dies on a bomb."""
import errno, pytest
from hostile import small_disk, read_only_dir, run_bounded
def test_disk(tmp_path):
    with small_disk(tmp_path, "64k") as d:
        with pytest.raises(OSError) as e:
            (d/"x").write_bytes(b"a"*200000)
        assert e.value.errno == errno.ENOSPC
    with read_only_dir(tmp_path, {"a/b.txt": b"hi"}) as d:
        assert (d/"a/b.txt").read_bytes() == b"hi"
        with pytest.raises(OSError) as e:
            (d/"c").write_bytes(b"1")
        assert e.value.errno == errno.EROFS
def test_bounded():
    r = run_bounded("x = bytearray(3 * 1024**3)", memory_mib=1024)
    assert r.returncode != 0 and "MemoryError" in r.stderr
    r = run_bounded("x = bytearray(100 * 1024**2); x[::4096] = b'1' * len(x[::4096]); print('ok')", memory_mib=1024)
    assert r.returncode == 0 and r.peak_rss_mib > 90, r
    r = run_bounded("import time; time.sleep(10)", timeout_s=1)
    assert r.timed_out
