"""Command line: `paddle-fastconv {info,bench} ...` (or `python -m paddle_fastconv`
from outside the source tree)."""
import argparse
import os
import sys


def _parser():
    p = argparse.ArgumentParser(prog="paddle-fastconv",
                                description="paddle_fastconv: fused Conv+BN+ReLU, ResNet "
                                            "and Inception blocks for Paddle.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="what this build contains (engines, archs, library, threads)")
    b = sub.add_parser("bench", help="stock vs fused timing of Conv+BN+ReLU layers and of "
                                     "whole models on this machine (outputs are checked "
                                     "equal before timing)")
    b.add_argument("--layers", default="default",
                   help="comma-separated layer names, 'default' (%s), 'all' or 'none'"
                   % ",".join(["conv3x3_64x64_56", "conv1x1_64x256_56"]))
    b.add_argument("--model", default="resnet50",
                   choices=["resnet50", "googlenet", "all", "none"],
                   help="whole model(s) at --image-size: stock, fused (NCHW and "
                        "channels_last), paddle.inference with oneDNN and the "
                        "oneDNN conv floor (the model's convolutions alone; CPU) "
                        "(default resnet50; googlenet at 224 only)")
    b.add_argument("--image-size", type=int, default=224, help="model input size (default 224)")
    b.add_argument("--mode", choices=["eval", "train", "both"], default="both",
                   help="eval (no_grad forward; the fused models frozen, see "
                        "paddle_fastconv.freeze) or train (forward+backward); default both")
    b.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    b.add_argument("--data-format", choices=["NCHW", "NHWC"], default="NCHW")
    b.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="CPU threads for stock and fused alike (default: all cores, %d)"
                   % os.cpu_count())
    b.add_argument("--repeat", type=int, default=5,
                   help="timed runs of each variant, in turns (per round stock, "
                        "fused, ... each run twice, untimed then timed, so a "
                        "drifting machine slows all alike); the median is shown "
                        "(default 5)")
    b.add_argument("--json", help="also write the results to this JSON file")
    b.add_argument("--png", help="also draw the speedups into this PNG (needs matplotlib)")
    b.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where to run; auto: the GPU when Paddle has CUDA and one is "
                        "present, else the CPU (default auto)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.cmd == "bench":
        if args.threads < 1 or args.batch < 1 or args.repeat < 1:
            raise SystemExit("bench: --threads, --batch and --repeat must be >= 1")
        # `import paddle` fixes its thread pools from OMP_NUM_THREADS; set it for
        # stock and fused alike by restarting with the environment in place.
        want = str(args.threads)
        if os.environ.get("OMP_NUM_THREADS") != want:
            env = dict(os.environ, OMP_NUM_THREADS=want)
            # -P: do not put the current directory on sys.path, so a run from
            # the source tree still imports the installed package.
            safe = ["-P"] if sys.version_info >= (3, 11) else []
            os.execve(sys.executable, [sys.executable] + safe + ["-m", "paddle_fastconv"] +
                      (argv if argv is not None else sys.argv[1:]), env)
    import paddle_fastconv
    if args.cmd == "info":
        from .info import main as info_main
        info_main()
        return
    from paddle.base import core

    import paddle

    from . import bench
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if args.device == "gpu" and not has_gpu:
        raise SystemExit("bench: --device gpu needs a CUDA build of Paddle and a GPU; "
                         "this Paddle %s" % ("sees no GPU" if paddle.device.is_compiled_with_cuda()
                                             else "is a CPU build"))
    paddle.set_device("gpu" if args.device == "gpu" or (args.device == "auto" and has_gpu)
                      else "cpu")
    if args.png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("bench: --png needs matplotlib (pip install matplotlib)")
    paddle_fastconv.set_num_threads(args.threads)
    core.set_num_threads(args.threads)  # Paddle's own CPU kernels (MKL/OpenMP)
    layers = (bench.DEFAULT_LAYERS if args.layers == "default" else
              list(bench.LAYERS) if args.layers == "all" else
              [] if args.layers == "none" else args.layers.split(","))
    unknown = [n for n in layers if n not in bench.LAYERS]
    if unknown:
        raise SystemExit("bench: unknown layer(s) %s; choose from %s" % (unknown, list(bench.LAYERS)))
    modes = ["eval", "train"] if args.mode == "both" else [args.mode]
    if args.image_size < 32:
        raise SystemExit("bench: --image-size must be >= 32")
    models = {"none": [], "all": ["resnet50", "googlenet"]}.get(args.model, [args.model])
    if "googlenet" in models and args.image_size != 224:
        raise SystemExit("bench: googlenet takes 224x224 images only (its auxiliary heads "
                         "fix the size); use --image-size 224")
    bench.run(layers, args.batch, modes, args.data_format, args.repeat, args.json,
              models=models, image_size=args.image_size, model_repeat=args.repeat,
              png_path=args.png)


if __name__ == "__main__":
    main()
