"""Timing shared by the block benchmarks (ResNet and Inception blocks): eval
under no_grad, and a training step (forward and backward with a fixed output
gradient); throughput and achieved GFLOP/s go into extra_info."""
import paddle


def _record(benchmark, info, batch, gflop):
    med = benchmark.stats.stats.median
    info["images_per_s"] = batch / med
    info["gflops"] = gflop / med


def time_eval(benchmark, info, m, x, gflop):
    batch = x.shape[0]
    with paddle.no_grad():
        benchmark.pedantic(lambda: m(x), rounds=7, warmup_rounds=2, iterations=1)
    _record(benchmark, info, batch, gflop)


def time_train_step(benchmark, info, m, x, gflop):
    """Forward and backward (input and parameter gradients); `gflop` is the
    forward's count (a training step is taken as three times it)."""
    x.stop_gradient = False
    dy = paddle.randn(m(x).shape)

    def step():
        m(x).backward(dy)
        m.clear_gradients()
        x.clear_gradient()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1, iterations=1)
    _record(benchmark, info, x.shape[0], 3 * gflop)
