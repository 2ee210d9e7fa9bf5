"""release_free_memory hands freed heap pages back to the system."""

import os
import subprocess
import sys
import textwrap

import pytest

from raynerf.hostmem import MALLOC_TUNABLES

# In a child started with the tunables the `raynerf` command uses (freed memory stays in
# the heap), 256 MiB is malloc'ed in 2 MiB blocks, touched, and freed but for the last
# block (which pins the heap's top, so that free() alone cannot shrink it); the resident
# size is read before and after the call.
CHILD = textwrap.dedent("""
    import ctypes, ctypes.util
    from raynerf.hostmem import release_free_memory

    def resident_mib():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 2 << 20
    blocks = [libc.malloc(size) for _ in range(129)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in blocks[:-1]:
        libc.free(block)
    before = resident_mib()
    released = release_free_memory()
    print(released, before, resident_mib())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_memory_returns_freed_heap_pages():

    env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES.replace("glibc.malloc.hugetlb=1:", ""))
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    released, before, after = out.stdout.split()
    assert released == "True"
    assert float(before) - float(after) > 200, out.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's tunables")
@pytest.mark.parametrize(
    "before, no_reexec, expected",
    [
        (None, False, MALLOC_TUNABLES),  # re-executed with the tunables
        ("glibc.pthread.rseq=0", False, "glibc.pthread.rseq=0:" + MALLOC_TUNABLES),  # others kept
        ("glibc.malloc.arena_max=2", False, "not re-executed"),  # the user's malloc settings win
        (None, True, "not re-executed"),
    ],
)
def test_reexec_with_malloc_tunables(before, no_reexec, expected):
    # The child asks to re-execute as `python -c SHOW`; if it returns instead, it says so.
    show = "import os; print(os.environ.get('GLIBC_TUNABLES'))"
    child = (
        f"from raynerf.hostmem import reexec_with_malloc_tunables; "
        f"reexec_with_malloc_tunables(['-c', {show!r}]); print('not re-executed')"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RAYNERF_NO_REEXEC")}
    env.update({"GLIBC_TUNABLES": before} if before else {})
    env.update({"RAYNERF_NO_REEXEC": "1"} if no_reexec else {})
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
