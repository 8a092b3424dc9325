"""ctypes binding of the emulated kernel library (emu_shim.cc) and the
guarded, optionally misaligned host buffers the tests hand to it."""
import ctypes

import numpy as np

DTYPE_IDS = {"float32": 0, "float16": 1, "bfloat16": 2}
# numpy storage of each activation dtype: bf16 travels as uint16 bit patterns.
STORAGE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
ALIGN = 64            # "aligned" buffers start on a 64-byte boundary
GUARD = 64            # bytes checked on both sides of every buffer
GUARD_BYTE = 0xA5
CUDA_SUCCESS = 0
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_INVALID_CONFIGURATION = 9
CUDA_ERROR_LAUNCH_FAILURE = 719


def to_storage(x, dtype):
    """float64 array -> array in the dtype's storage (round to nearest even)."""
    if dtype != "bfloat16":
        return np.asarray(x).astype(STORAGE[dtype])
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(np.asarray(x)), np.uint16(0x7FC0), bits)


def to_float64(a, dtype):
    """Storage array -> the float64 values it holds."""
    if dtype == "bfloat16":
        return (np.asarray(a).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return np.asarray(a).astype(np.float64)


class Buffer:
    """`n` elements of a storage dtype inside a larger allocation whose bytes
    around the data hold a guard pattern.  offset_bytes: distance of the data
    from a 64-byte boundary (0 = aligned; one element misaligns every vector
    access).  check_guards() catches writes out of bounds."""

    def __init__(self, values, offset_bytes=0):
        values = np.ascontiguousarray(values)
        self.n, self.itemsize = values.size, values.itemsize
        self._raw = np.full(values.nbytes + 2 * GUARD + 2 * ALIGN, GUARD_BYTE, np.uint8)
        start = GUARD + (-(self._raw.ctypes.data + GUARD)) % ALIGN + offset_bytes
        self._start, self._stop = start, start + values.nbytes
        self.array = self._raw[start:self._stop].view(values.dtype).reshape(values.shape)
        self.array[...] = values
        self.ptr = self._raw.ctypes.data + start

    def check_guards(self, what):
        bad = np.flatnonzero(np.concatenate(
            [self._raw[:self._start], self._raw[self._stop:]]) != GUARD_BYTE)
        assert bad.size == 0, "%s: %d guard bytes around the buffer overwritten" % (
            what, bad.size)


class Slice:
    """Channels [c0, c0 + channels) of a Buffer that holds an (outer, ld,
    inner) tensor: what a launcher gets for a SliceStrides operand (its
    pointer is the slice's first channel).  `array` is the slice (a view);
    check_guards() also requires every element outside the slice to be as it
    was at construction: a launcher must not touch the rest of the rows."""

    def __init__(self, buf, view, c0):
        o, c, i = view
        self.buf = buf
        self.ptr = buf.ptr + c0 * i * buf.itemsize
        wide = buf.array.reshape(o, -1, i)
        self.array = wide[:, c0:c0 + c, :]
        self._outside = np.ones(wide.shape, bool)
        self._outside[:, c0:c0 + c, :] = False
        self._before = wide[self._outside].copy()
        self._wide = wide

    def check_guards(self, what):
        self.buf.check_guards(what)
        after = self._wide[self._outside]
        assert np.array_equal(after.view(np.uint8), self._before.view(np.uint8)), \
            "%s: elements outside the channel slice were modified" % what


def _ptr(x):
    if x is None:
        return None
    if isinstance(x, (Buffer, Slice)):
        return x.ptr
    assert isinstance(x, np.ndarray) and x.flags.c_contiguous
    return x.ctypes.data


P, I64, I32, F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
LDS = [I64] * 4  # SliceStrides (ld_z, ld_y, ld_dy, ld_dz), 0 = dense
_SIGNATURES = {
    "fc_bn_workspace_bytes": (I64, [I64, I64, I64]),
    "fc_bn_stats": (I32, [I32, P, I64, I64, I64, P, P, P, P, F32, F32, P, P, P, P, P] + LDS),
    "fc_bn_act_forward": (I32, [I32, P, P, P, P, I32, P, I64, I64, I64] + LDS),
    "fc_bias_act_forward": (I32, [I32, P, P, P, I32, P, I64, I64, I64] + LDS),
    "fc_bn_act_backward_reduce": (I32, [I32, P, P, P, P, P, I32, I64, I64, I64, P, P, P]
                                  + LDS),
    "fc_bn_act_backward_apply": (I32, [I32, P, P, P, P, P, P, P, P, I32, I32, I64, I64,
                                       I64, P, P] + LDS),
    "fc_fold_bn": (I32, [I32, P, P, P, P, P, P, F32, I64, I64, P, P]),
    "fc_emu_set_seed": (None, [ctypes.c_uint64]),
    "fc_emu_set_workers": (None, [I32]),
    "fc_emu_last_fault": (ctypes.c_char_p, []),
    "fc_emu_launch_count": (I64, []),
    "fc_emu_launch_get": (None, [I64, P]),
    "fc_emu_clear_launch_log": (None, []),
    "fc_selftest_shuffle": (I32, [P]),
    "fc_selftest_reverse": (I32, [P, P, I32]),
    "fc_selftest_divergent_barrier": (I32, [P]),
    "fc_selftest_bad_launch": (I32, [I32]),
    "fc_selftest_convert": (None, [P, I64, P, P, P, P]),
}


class Kernels:
    """The launchers of bn_act_cuda.h, called with Buffers / float32 arrays.
    Every call returns the launcher's cudaError_t as an int."""

    def __init__(self, path):
        self.path = path
        self.lib = ctypes.CDLL(path)
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = res, args

    def call(self, name, *args, lds=None):
        """lds: dict of SliceStrides fields (z, y, dy, dz) for the launchers
        that take them; missing fields are 0 (dense)."""
        if _SIGNATURES[name][1][-len(LDS):] == LDS and name != "fc_bn_workspace_bytes":
            lds = lds or {}
            args += tuple(lds.get(k, 0) for k in ("z", "y", "dy", "dz"))
        else:
            assert not lds, "%s takes no slice strides" % name
        return getattr(self.lib, name)(*[
            _ptr(a) if a is None or isinstance(a, (Buffer, Slice, np.ndarray)) else a
            for a in args])

    def workspace_bytes(self, view):
        return self.lib.fc_bn_workspace_bytes(*view)

    def launches(self):
        """(grid, block) of every launch since the last clear_launches()."""
        out = np.zeros(6, np.uint32)
        recs = []
        for k in range(self.lib.fc_emu_launch_count()):
            self.lib.fc_emu_launch_get(k, out.ctypes.data)
            recs.append((tuple(int(v) for v in out[:3]), tuple(int(v) for v in out[3:])))
        return recs

    def clear_launches(self):
        self.lib.fc_emu_clear_launch_log()

    def last_fault(self):
        return self.lib.fc_emu_last_fault().decode()
