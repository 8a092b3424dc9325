"""Trains a stock and a fused ResNet or GoogLeNet side by side on a real image dataset.

Both models start from the same weights and see the same batches in the same
order; per epoch the script prints loss, accuracy and training images/s of
each, and at the end draws the loss and accuracy curves of both on the same
axes (PNG). The curves should agree up to floating-point drift.

Inputs get a little Gaussian noise (--noise, the same for both models): the
digits have a perfectly constant background, where max-pooling sees exact
ties whose gradient goes to whichever input is larger by the last bit of
rounding; stock and fused convolutions round differently, so on tied inputs
the two runs take different (equally valid) gradient paths from the first
step. --noise 0 shows that.

Data: scikit-learn's handwritten digits (1797 8x8 images, 10 classes; ships
inside the scikit-learn package, nothing is downloaded), resized, or any image
folder with one subfolder per class (--data PATH).

    pip install scikit-learn matplotlib
    python examples/train.py --epochs 8 --out curves.png
    python examples/train.py --data /path/to/images --image-size 64
"""
import argparse
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits",
                   help="'digits' (scikit-learn's bundled dataset) or an image folder with "
                        "one subfolder per class (default: digits)")
    p.add_argument("--model", default="resnet18",
                   choices=["resnet18", "resnet34", "resnet50", "googlenet"],
                   help="(default: resnet18; googlenet needs --image-size 224, which its "
                        "auxiliary heads fix, and trains on main + 0.3 * each auxiliary loss)")
    p.add_argument("--epochs", type=int, default=8, help="(default: 8)")
    p.add_argument("--batch", type=int, default=32, help="(default: 32)")
    p.add_argument("--image-size", type=int, default=32,
                   help="images are resized to this square size (default: 32)")
    p.add_argument("--lr", type=float, default=0.05,
                   help="SGD-momentum learning rate, cosine decay (default: 0.05)")
    p.add_argument("--noise", type=float, default=0.02,
                   help="std of Gaussian input noise, the same for both models (default: "
                        "0.02; see above)")
    p.add_argument("--channels-last", action="store_true",
                   help="fuse with channels_last=True (NHWC activations inside)")
    p.add_argument("--fp64-reference", action="store_true",
                   help="also train the stock model in float64 on the same batches: the "
                        "yardstick for how far fp32 runs drift apart (slow)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="CPU threads for stock and fused alike (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--out", default="train_curves.png",
                   help="PNG of the loss/accuracy curves (default: train_curves.png)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch", "image_size", "threads"):
        if getattr(args, name) < 1:
            p.error("--%s must be >= 1" % name.replace("_", "-"))
    if args.noise < 0:
        p.error("--noise must be >= 0")
    if args.model == "googlenet" and args.image_size != 224:
        p.error("--model googlenet needs --image-size 224 (its auxiliary heads fix the size)")
    if args.data != "digits" and not os.path.isdir(args.data):
        p.error("--data must be 'digits' or an existing folder, got %r" % args.data)
    return args


def load_digits_dataset(size, seed):
    import numpy as np
    from sklearn.datasets import load_digits

    import paddle
    d = load_digits()
    x = (d.images.astype("float32") / 16.0 - 0.5) / 0.5  # [N, 8, 8] in [-1, 1]
    x = paddle.to_tensor(x[:, None])
    x = paddle.nn.functional.interpolate(x, size=[size, size], mode="bilinear",
                                         align_corners=False)
    x = x.tile([1, 3, 1, 1]).numpy()
    y = d.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    tr, te = order[:cut], order[cut:]
    return (x[tr], y[tr]), (x[te], y[te]), 10


def load_folder_dataset(root, size, seed):
    import numpy as np
    from paddle.vision import transforms
    from paddle.vision.datasets import DatasetFolder

    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if len(classes) < 2:
        raise SystemExit("--data: %s needs one subfolder per class (found %d)"
                         % (root, len(classes)))
    tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                             transforms.Normalize([0.5] * 3, [0.5] * 3)])
    ds = DatasetFolder(root, transform=tf)
    xs, ys = [], []
    for i in range(len(ds)):
        img, label = ds[i]
        img = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
        if img.shape[0] == 1:
            img = np.repeat(img, 3, axis=0)
        xs.append(img[:3].astype("float32"))
        ys.append(int(label))
    x, y = np.stack(xs), np.array(ys, "int64")
    order = np.random.default_rng(seed).permutation(len(y))
    cut = max(1, int(0.8 * len(y)))
    tr, te = order[:cut], order[cut:]
    return (x[tr], y[tr]), (x[te], y[te]), len(classes)


def progress(prefix, done, total, width=30):
    filled = int(width * done / total)
    sys.stderr.write("\r%s [%s%s] %d/%d" % (prefix, "#" * filled, "." * (width - filled),
                                            done, total))
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def evaluate(model, x, y, batch):
    import paddle
    from paddle_fastconv.bench_models import main_output
    model.eval()
    correct, loss_sum = 0, 0.0
    with paddle.no_grad():
        for i in range(0, len(y), batch):
            xb, yb = paddle.to_tensor(x[i:i + batch]), paddle.to_tensor(y[i:i + batch])
            logits = main_output(model(xb))
            loss_sum += float(paddle.nn.functional.cross_entropy(logits, yb[:, None],
                                                                 reduction="sum"))
            correct += int((logits.argmax(axis=1) == yb).sum())
    return loss_sum / len(y), correct / len(y)


def main(argv=None):
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before Paddle is imported
    import numpy as np
    import paddle
    from paddle.vision import models as vision_models

    import paddle_fastconv as pf
    from paddle_fastconv.bench_models import training_loss

    pf.set_num_threads(args.threads)
    paddle.base.core.set_num_threads(args.threads)
    paddle.seed(args.seed)
    if args.data == "digits":
        (xtr, ytr), (xte, yte), classes = load_digits_dataset(args.image_size, args.seed)
        name = "scikit-learn digits"
    else:
        (xtr, ytr), (xte, yte), classes = load_folder_dataset(args.data, args.image_size,
                                                              args.seed)
        name = args.data
    print("data: %s, %d train / %d test images, %d classes, %dx%d; model %s; %d threads"
          % (name, len(ytr), len(yte), classes, args.image_size, args.image_size,
             args.model, args.threads))

    stock = getattr(vision_models, args.model)(num_classes=classes)
    fused = getattr(vision_models, args.model)(num_classes=classes)
    fused.set_state_dict(stock.state_dict())
    pf.fuse(fused, channels_last=args.channels_last)
    steps = args.epochs * ((len(ytr) + args.batch - 1) // args.batch)
    runs = {}
    models = [("stock", stock), ("fused", fused)]
    if args.fp64_reference:
        ref = getattr(vision_models, args.model)(num_classes=classes)
        ref.to(dtype="float64")
        ref.set_state_dict({k: v.astype("float64") for k, v in stock.state_dict().items()})
        models.append(("stock_fp64", ref))
    for tag, model in models:
        sched = paddle.optimizer.lr.CosineAnnealingDecay(args.lr, T_max=steps)
        opt = paddle.optimizer.Momentum(sched, momentum=0.9, parameters=model.parameters(),
                                        weight_decay=1e-4)
        runs[tag] = dict(model=model, opt=opt, sched=sched, loss=[], acc=[], test_loss=[],
                         ips=[])

    rng = np.random.default_rng(args.seed)
    print("| epoch | stock loss | fused loss | stock acc | fused acc | stock img/s "
          "| fused img/s |")
    print("|---|---|---|---|---|---|---|")
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(ytr))  # the same batches for both models
        noise = rng.normal(0, args.noise, xtr.shape).astype("float32") if args.noise else 0
        xep = xtr + noise
        for tag, r in runs.items():
            model, opt = r["model"], r["opt"]
            model.train()
            loss_sum, seconds, batches = 0.0, 0.0, range(0, len(order), args.batch)
            for k, i in enumerate(batches):
                idx = order[i:i + args.batch]
                if len(idx) < 2:  # BatchNorm needs more than one image
                    continue
                xb = paddle.to_tensor(xep[idx].astype("float64" if tag == "stock_fp64"
                                                      else "float32"))
                yb = paddle.to_tensor(ytr[idx][:, None])
                t0 = time.perf_counter()
                loss = training_loss(model(xb), yb)
                loss.backward()
                opt.step()
                opt.clear_grad()
                r["sched"].step()
                loss_value = float(loss)  # synchronizes
                seconds += time.perf_counter() - t0
                loss_sum += loss_value * len(idx)
                progress("epoch %d %s" % (epoch, tag), k + 1, len(batches))
            r["loss"].append(loss_sum / len(order))
            r["ips"].append(len(order) / seconds)
            test_loss, acc = evaluate(model, xte.astype("float64") if tag == "stock_fp64"
                                      else xte, yte, args.batch)
            r["test_loss"].append(test_loss)
            r["acc"].append(acc)
        s, f = runs["stock"], runs["fused"]
        print("| %d | %.4f | %.4f | %.3f | %.3f | %.1f | %.1f |" % (
            epoch, s["loss"][-1], f["loss"][-1], s["acc"][-1], f["acc"][-1], s["ips"][-1],
            f["ips"][-1]))
    s, f = runs["stock"], runs["fused"]
    drift = max(abs(a - b) for a, b in zip(s["loss"], f["loss"]))
    print("largest per-epoch train-loss difference stock vs fused: %.2e; final test "
          "accuracy stock %.3f, fused %.3f" % (drift, s["acc"][-1], f["acc"][-1]))
    if "stock_fp64" in runs:
        r = runs["stock_fp64"]
        print("float64 stock: largest per-epoch train-loss difference to fp32 stock %.2e, "
              "to fused %.2e; final test accuracy %.3f" % (
                  max(abs(a - b) for a, b in zip(s["loss"], r["loss"])),
                  max(abs(a - b) for a, b in zip(f["loss"], r["loss"])), r["acc"][-1]))
    print("median training img/s: stock %.1f, fused %.1f (%.2fx)" % (
        float(np.median(s["ips"])), float(np.median(f["ips"])),
        float(np.median(f["ips"]) / np.median(s["ips"]))))
    plot(runs, args, name)
    print("curves: %s" % args.out)


def plot(runs, args, name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = list(range(1, args.epochs + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for tag, style in (("stock", dict(color="tab:blue", lw=3, alpha=0.5)),
                       ("fused", dict(color="tab:orange", ls="--", marker="o", ms=3)),
                       ("stock_fp64", dict(color="gray", lw=1))):
        if tag not in runs:
            continue
        r = runs[tag]
        axes[0].plot(epochs, r["loss"], label="%s train" % tag, **style)
        axes[0].plot(epochs, r["test_loss"], label="%s test" % tag,
                     **dict(style, alpha=0.3 if tag == "stock" else 0.6))
        axes[1].plot(epochs, r["acc"], label=tag, **style)
    axes[0].set_title("loss (log scale)")
    axes[0].set_yscale("log")
    axes[1].set_title("test accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("%s on %s, %dx%d, batch %d: stock vs paddle_fastconv fused%s" % (
        args.model, name, args.image_size, args.image_size, args.batch,
        " (channels_last)" if args.channels_last else ""))
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
