"""Threads, caches and the convolution engine of the CPU path."""
import ctypes
import warnings

from ._loader import CLIB

_ENGINES = ("onednn", "paddle")


def onednn_available():
    """True when this build runs CPU convolutions with Paddle's oneDNN."""
    buf = ctypes.create_string_buffer(32)
    CLIB.fastconv_onednn_version(buf, 32)
    return bool(buf.value)


def onednn_version():
    """Version of the oneDNN library loaded at run time ('' without oneDNN)."""
    buf = ctypes.create_string_buffer(32)
    CLIB.fastconv_onednn_version(buf, 32)
    return buf.value.decode()


def _kernel_states(env):
    """The words for the C ABI's kernel states 0-3 (fastconv_*_state)."""
    return ("off: this CPU has no AVX-512F", "on", "off: %s=0" % env,
            "off: no oneDNN engine in this build")


_WINOGRAD_STATES = _kernel_states("PADDLE_FASTCONV_WINOGRAD")


def winograd_status():
    """Whether eval runs qualifying 3x3 convolutions (stride 1, ungrouped,
    channels multiples of 16, output planes of 14x14 or more) on this
    package's Winograd F(4x4, 3x3) kernel: "on", or "off: <why>"."""
    return _WINOGRAD_STATES[CLIB.fastconv_winograd_state()]


_CONV1X1_STATES = _kernel_states("PADDLE_FASTCONV_CONV1X1")


def conv1x1_status():
    """Whether expanding 1x1 convolutions (stride 1, no padding or groups, at
    most 128 input channels and at least twice as many outputs) run on this
    package's 1x1 kernels, which apply bias, residual and ReLU before the
    output is stored: NCHW ones that carry a bias, residual or ReLU, and NHWC
    ones with outputs in multiples of 16 where the weights are cached (eval
    of the fused layers). "on", or "off: <why>"."""
    return _CONV1X1_STATES[CLIB.fastconv_conv1x1_state()]


def get_cpu_conv_engine():
    return _ENGINES[CLIB.fastconv_get_cpu_conv_engine()]


def set_cpu_conv_engine(name):
    """'onednn' (the default when built with it) or 'paddle' (Paddle's own
    conv2d / conv2d_grad with the fused BN kernels around them; correct, but
    no faster than stock convolutions)."""
    if name not in _ENGINES:
        raise ValueError("set_cpu_conv_engine: argument 'name' must be one of %s, got %r"
                         % (_ENGINES, name))
    if not CLIB.fastconv_set_cpu_conv_engine(_ENGINES.index(name)):
        raise RuntimeError("set_cpu_conv_engine: this build of paddle_fastconv has no "
                           "oneDNN engine (the installed Paddle ships no oneDNN)")


def _warn_if_no_onednn():
    if not onednn_available():
        warnings.warn("paddle_fastconv: this Paddle ships no oneDNN, so CPU convolutions "
                      "run through Paddle's own conv API (correct, but not faster than "
                      "stock); the fused BN/ReLU kernels still apply.", RuntimeWarning,
                      stacklevel=3)


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


def set_cache_capacity(plans=512, folded_weights=256, host_pool_bytes=1 << 30):
    """Bounds the CPU caches: oneDNN primitive plans (per direction),
    eval-mode weight copies (one per layer and geometry, each of two kinds:
    BN folded into the filters, and filters only reordered for oneDNN, for
    the convolutions without BN such as GoogLeNet's), and the bytes of freed
    output memory the CPU ops keep for reuse (0 turns the pool off). Least
    recently used entries are evicted; a layer's weight copies are also
    dropped when its weight tensor is freed.

    Why a pool: large CPU tensors otherwise get freshly mapped pages from
    malloc, and the first write of each 4 KiB page faults; on the project's
    machine a fresh 25.7 MB output cost 12-13 ms to write against about 5 ms
    into reused memory."""
    for name, v in (("plans", plans), ("folded_weights", folded_weights),
                    ("host_pool_bytes", host_pool_bytes)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("set_cache_capacity: argument '%s' must be an int >= 0, "
                             "got %r" % (name, v))
    CLIB.fastconv_set_cache_capacity(plans, folded_weights)
    CLIB.fastconv_set_host_pool_capacity(host_pool_bytes)


def host_pool_available():
    """Whether the CPU ops reuse freed output memory (see set_cache_capacity):
    it needs Paddle 3.x (its from_blob returns each block to its own
    deleter); on older Paddle outputs come from Paddle's allocator."""
    return bool(CLIB.fastconv_host_pool_available())


def clear_caches():
    """Drops every cached primitive and eval weight copy (they are rebuilt on
    use) and frees the pooled output memory."""
    CLIB.fastconv_clear_caches()


def set_weight_checks(on):
    """on=False trusts every cached eval weight copy in this process: eval
    calls no longer fingerprint their weights to see whether they changed
    (see paddle_fastconv.freeze, which does this per model). Meant for
    processes whose weights never change, such as one serving a
    paddle.inference predictor; a weight changed while checks are off is not
    seen (clear_caches() drops the stale copies). on=True (the default)
    checks again."""
    if not isinstance(on, bool):
        raise TypeError("set_weight_checks: argument 'on' must be a bool, got %r" % (on,))
    CLIB.fastconv_set_weight_checks(int(on))


def get_weight_checks():
    """Whether eval calls check their cached weight copies (set_weight_checks)."""
    return bool(CLIB.fastconv_get_weight_checks())


def cache_info():
    """Entries in the CPU caches; the bytes of the calling thread's scratch
    arena (oneDNN scratchpads and reorder buffers, kept between calls outside
    Paddle's allocator; freed by clear_caches() or when the thread ends); and
    the bytes of freed output memory held for reuse (see set_cache_capacity);
    "weight_checks", how many weight fingerprints eval calls have taken in
    this process (see set_weight_checks), and "frozen_weights", how many
    parameter buffers paddle_fastconv.freeze has marked constant."""
    out = (ctypes.c_size_t * 4)()
    CLIB.fastconv_cache_sizes(out)
    return {"plans": out[0], "folded_weights": out[1], "scratch_bytes": out[2],
            "host_pool_bytes": out[3], "weight_checks": int(CLIB.fastconv_weight_checks()),
            "frozen_weights": int(CLIB.fastconv_frozen_weight_count())}
