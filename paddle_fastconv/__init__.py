"""paddle_fastconv: fused convolution blocks for PaddlePaddle.

Importing the package loads its compiled op library into Paddle."""
from ._loader import BUILD_INFO, LIBRARY_PATH  # noqa: F401  (loads the ops)
from . import models, nn, ops, reference  # noqa: F401
from .checkpoint import remap_optimizer_state  # noqa: F401
from .freezing import freeze, is_frozen, unfreeze  # noqa: F401
from .fusion import fuse, unfuse  # noqa: F401
from .nn import ConvBNReLU  # noqa: F401
from .ops import conv_bn_act  # noqa: F401
from .runtime import (cache_info, clear_caches, get_cpu_conv_engine,  # noqa: F401
                      get_num_threads, host_pool_available, onednn_available,
                      onednn_version,
                      set_cache_capacity, set_cpu_conv_engine, set_num_threads,
                      set_weight_checks, get_weight_checks, winograd_status,
                      conv1x1_status)
from . import runtime as _runtime

_runtime._warn_if_no_onednn()

__version__ = BUILD_INFO["version"]
