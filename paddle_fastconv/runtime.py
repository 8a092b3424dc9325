"""Threads and caches of the CPU engine."""
import ctypes

from ._loader import CLIB


def set_num_threads(n):
    """Threads used by the fused CPU ops (oneDNN and the BN kernels).

    This is the OpenMP thread count of the calling thread, which Paddle's own
    CPU kernels share. Note that `import paddle` sets OMP_NUM_THREADS=1 when
    it is not already set."""
    if not isinstance(n, int) or n < 1:
        raise ValueError("set_num_threads: argument 'n' must be a positive int, got %r" % (n,))
    CLIB.fastconv_set_num_threads(n)


def get_num_threads():
    return CLIB.fastconv_get_num_threads()


def set_cache_capacity(plans=512, folded_weights=256):
    """Bounds the CPU caches: oneDNN primitive plans (per direction) and
    eval-mode folded weights (one per fused layer and geometry). Least
    recently used entries are evicted."""
    for name, v in (("plans", plans), ("folded_weights", folded_weights)):
        if not isinstance(v, int) or v < 0:
            raise ValueError("set_cache_capacity: argument '%s' must be an int >= 0, "
                             "got %r" % (name, v))
    CLIB.fastconv_set_cache_capacity(plans, folded_weights)


def clear_caches():
    """Drops every cached primitive and folded weight (they are rebuilt on use)."""
    CLIB.fastconv_clear_caches()


def cache_info():
    out = (ctypes.c_size_t * 2)()
    CLIB.fastconv_cache_sizes(out)
    return {"plans": out[0], "folded_weights": out[1]}
