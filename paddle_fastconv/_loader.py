"""Loads the compiled op library into Paddle and builds the Python entry
points of its custom ops.

A pip-installed package does not get the op wrapper module Paddle generates
for `paddle.utils.cpp_extension.setup`, so the library is registered here
with Paddle's loader and the wrappers are generated from the registered op
metadata, which keeps them right for dygraph, PIR and legacy static graphs of
the installed Paddle version."""
import ctypes
import glob
import os
import zlib  # noqa: F401  (paddlepaddle-gpu 2.6 exports an old zlib: load ours first)

import paddle

_HERE = os.path.dirname(os.path.abspath(__file__))
_OPS = ("fastconv_conv_bn_act", "fastconv_onednn_conv2d", "fastconv_sync_bn_conv_stats",
        "fastconv_sync_bn_apply", "fastconv_sync_bn_backward_reduce", "fastconv_sync_bn_backward",
        "fastconv_max_pool_nhwc", "fastconv_max_pool_nchw", "fastconv_avg_pool_nhwc_to_nchw",
        "fastconv_relayout", "fastconv_inception",
        "fastconv_resnet_block", "fastconv_linear")


class BuildMismatchError(ImportError):
    pass


def _library_path():
    found = sorted(glob.glob(os.path.join(_HERE, "_fastconv_ops*.so")))
    if not found:
        raise ImportError(
            "paddle_fastconv: the compiled op library was not found in %s. "
            "Install the package with `pip install --no-build-isolation .` "
            "(a plain source checkout has no compiled library). If it is installed, this "
            "is the source tree shadowing it: run from another directory, use the "
            "`paddle-fastconv` command, or `python -P -m paddle_fastconv`." % _HERE)
    return found[0]


def _build_info():
    try:
        from ._build_info import BUILD_INFO
    except ImportError:
        raise ImportError("paddle_fastconv: _build_info.py is missing; the "
                          "package was not built by its setup.py.") from None
    return BUILD_INFO


def _check_version(info):
    built, running = info["paddle_version"], paddle.__version__
    if built != running:
        raise BuildMismatchError(
            "paddle_fastconv was built against Paddle %s but Paddle %s is "
            "installed. Custom-op libraries are tied to the Paddle they were "
            "compiled with: rebuild with `pip install --no-build-isolation "
            "--force-reinstall --no-deps .`" % (built, running))


def _make_api(op_name):
    from paddle.utils.cpp_extension import extension_utils as eu
    source = eu._custom_api_content(op_name)
    namespace = {}
    exec(compile(source, "<paddle_fastconv:%s>" % op_name, "exec"), namespace)
    return namespace[op_name]


BUILD_INFO = _build_info()
_check_version(BUILD_INFO)
LIBRARY_PATH = _library_path()
paddle.utils.cpp_extension.load_op_meta_info_and_register_op(LIBRARY_PATH)
OPS = {name: _make_api(name) for name in _OPS}
# The same handle Paddle opened (dlopen returns it again): a C ABI for threads,
# caches and build facts.
CLIB = ctypes.CDLL(LIBRARY_PATH)
CLIB.fastconv_set_cache_capacity.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
CLIB.fastconv_set_host_pool_capacity.argtypes = [ctypes.c_size_t]
CLIB.fastconv_host_pool_available.restype = ctypes.c_int
CLIB.fastconv_winograd_state.restype = ctypes.c_int
CLIB.fastconv_conv1x1_state.restype = ctypes.c_int
CLIB.fastconv_host_pool_peak.argtypes = [ctypes.c_int]
CLIB.fastconv_host_pool_peak.restype = ctypes.c_size_t
CLIB.fastconv_cache_sizes.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
CLIB.fastconv_release_eval_weights.argtypes = [ctypes.c_size_t]
CLIB.fastconv_release_eval_weights.restype = ctypes.c_size_t
CLIB.fastconv_freeze_weight.argtypes = [ctypes.c_size_t, ctypes.c_int]
CLIB.fastconv_freeze_weight.restype = None
CLIB.fastconv_set_weight_checks.argtypes = [ctypes.c_int]
CLIB.fastconv_get_weight_checks.restype = ctypes.c_int
CLIB.fastconv_weight_checks.restype = ctypes.c_uint64
CLIB.fastconv_frozen_weight_count.restype = ctypes.c_size_t
CLIB.fastconv_onednn_version.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
