"""The CUDA engine's Paddle-side code, executed without a GPU.

tests/cuda_emulation/host_build.py builds the package in its host test mode:
the CUDA engine (conv_bn_act_cuda.cc, inception_cuda.cc, and the ResNet
block through them) runs CPU tensors, with Paddle's own conv2d / conv2d_grad /
pool2d / pool2d_grad on the CPU and our production kernels compiled for the
CPU emulator.  The stock-oracle parity suites of the fused ops then run
against that build in a child process: outputs, every gradient, running
statistics, train and eval, NCHW and NHWC, static graphs.  What this cannot
cover on a machine without a GPU: cuDNN itself, fp16/bf16 (Paddle's CPU
convolutions are fp32) and real streams.

A check first proves that the ops really ran on the CUDA engine (its
emulated kernel launches grow), and the child's conftest refuses to run
unless it imported the host build, so these tests cannot pass by testing the
ordinary build."""
import os
import subprocess
import sys

import pytest

from cuda_emulation import build, host_build

TESTS = os.path.dirname(os.path.abspath(__file__))
# The parity suites of the ops with a CUDA engine (and the models and static
# graphs built from them).
SUITES = ["test_conv_bn_act.py", "test_inception.py", "test_resnet_block.py",
          "test_static_graph.py", "test_googlenet.py",
          # a whole ResNet-50: every parameter gradient against float64, and
          # three SGD-momentum steps against stock
          "test_fusion.py::test_fused_resnet50_gradients_against_float64_oracle",
          "test_fusion.py::test_three_sgd_momentum_steps_match"]


@pytest.fixture(scope="module")
def host_package():
    if build.compiler() is None:
        pytest.skip("no C++ compiler (set CXX or install g++): the host-mode build needs one")
    return host_build.build_host_package()


def _child(root, args, timeout=1200):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PADDLE_FASTCONV_EXPECT_CUDA_ON_HOST="1",
               PYTHONPATH=os.pathsep.join([root, TESTS]))
    # (cwd = the host build's root: its package is the one imported)
    return subprocess.run([sys.executable] + args, cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


ROUTING_CHECK = r"""
import ctypes
import paddle
import paddle_fastconv as pf
from paddle_fastconv import _loader

assert _loader.BUILD_INFO["cuda_on_host"], _loader.LIBRARY_PATH
lib = ctypes.CDLL(_loader.LIBRARY_PATH)
lib.fastconv_emulated_kernel_launches.restype = ctypes.c_int64
launches = lib.fastconv_emulated_kernel_launches


def check(name, layer, x):
    x.stop_gradient = False
    before = launches()
    layer(x).sum().backward()
    assert launches() > before, name + ": no CUDA-engine kernel ran"
    print(name, launches() - before, "launches")


check("conv_bn_act", pf.nn.ConvBNReLU(4, 6, 3, padding=1), paddle.randn([2, 4, 5, 5]))
check("inception", pf.nn.Inception(8, 8, 4, 3, 5, 2, 3, 4, batch_norm=True, relu="each"),
      paddle.randn([2, 8, 5, 5]))
block = pf.nn.BottleneckBlock(16, 4)
assert block.one_op
check("resnet_block", block, paddle.randn([2, 16, 5, 5]))
"""


def test_fused_ops_run_on_the_cuda_engine(host_package):
    p = _child(host_package, ["-c", ROUTING_CHECK], timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    for op in ("conv_bn_act", "inception", "resnet_block"):
        assert op + " " in p.stdout


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.replace(".py", ""))
def test_parity_suite_on_the_cuda_engine(host_package, suite):
    p = _child(host_package, ["-m", "pytest", "-q", "-p", "no:cacheprovider",
                              os.path.join(TESTS, suite)])
    tail = (p.stdout + p.stderr)[-6000:]
    assert p.returncode == 0, tail
    assert " passed" in tail, tail
