"""The peer section: digits' Trainer against PyTorch Lightning on the same network and data.

Each fit runs in a fresh process of its own, the two alternating, so that neither inherits the
other's warm caches or threads. digits trains its default: `Trainer(max_epochs=E)` with the
default callbacks (TensorBoard, confusion matrix, reports, checkpoint) on the default `cnn`,
in the dtype policy it picks on this machine (`precision="auto"`), augmentation included.
Lightning trains the same layers (three blocks of two 3x3 convolutions with batch norm and
ReLU, 32/64/128 filters, max pooling, a 256-unit dense layer with batch norm, dropout 0.4, ten
outputs: the same parameter count) with Adam at the same learning rate and label smoothing,
on in-memory tensors, with its `TensorBoardLogger` and a `ModelCheckpoint` on the validation
loss, in its default precision ("32-true") and without augmentation.

Optional: `torch` and `lightning` are not dependencies of digits. Where they are missing the
section says so and measures nothing.
"""

from __future__ import annotations

import importlib.util
import itertools
import time

from benchmarks.common import Bench, Table, median, progress, ratio, run_worker, seconds, times


def peers_installed() -> list[str]:
    """The peer packages that are missing (an empty list: both are there)."""
    return [name for name in ("torch", "lightning") if importlib.util.find_spec(name) is None]


def section_peer(bench: Bench) -> dict:
    missing = peers_installed()
    if missing:
        return {"skipped": f"{' and '.join(missing)} not installed "
                           "(pip install torch lightning to time PyTorch Lightning beside digits)"}
    sizes = bench.sizes
    epochs = sizes.peer_epochs or sizes.epochs
    runs: dict[str, list[dict]] = {"digits": [], "lightning": []}
    for round_ in range(sizes.peer_repeats):
        order = ["digits", "lightning"] if round_ % 2 == 0 else ["lightning", "digits"]
        for name in order:
            args = {"epochs": epochs, "train": sizes.overhead_train, "dataset": sizes.peer_dataset,
                    "log_dir": str(bench.tmp / "peer" / f"{name}-{round_}")}
            runs[name].append(run_worker(f"peer-{name}", args))
            progress(f"peer: round {round_ + 1}/{sizes.peer_repeats} {name:9s} "
                     f"{runs[name][-1]['fit_seconds']:6.1f} s")
    summary = {}
    for name, results in runs.items():
        summary[name] = {
            "fit_seconds": median(r["fit_seconds"] for r in results),
            "first_epoch_seconds": median(r["epoch_seconds"][0] for r in results),
            "steady_epoch_seconds": median(median(r["epoch_seconds"][1:]) for r in results
                                           if len(r["epoch_seconds"]) > 1),
            "parameters": results[0]["parameters"],
            "precision": results[0]["precision"],
            "train_images": results[0]["train_images"],
            "runs": results,
        }
    pairs = [d["fit_seconds"] / lightning["fit_seconds"]
             for d, lightning in zip(runs["digits"], runs["lightning"], strict=True)]
    return {"epochs": epochs, "repeats": sizes.peer_repeats, "contenders": summary,
            "dataset": sizes.peer_dataset,
            "fit_ratio": median(pairs),
            "steady_epoch_ratio": ratio(summary["digits"]["steady_epoch_seconds"],
                                        summary["lightning"]["steady_epoch_seconds"]),
            "versions": runs["lightning"][0]["versions"]}


def peer_tables(result: dict) -> list[Table]:
    if "skipped" in result:
        return [Table("Peer: PyTorch Lightning", ("",), [(f"skipped: {result['skipped']}",)])]
    c = result["contenders"]
    rows = [(name, f"{c[name]['parameters']:,}", c[name]["precision"],
             seconds(c[name]["fit_seconds"], 1), seconds(c[name]["first_epoch_seconds"], 2),
             seconds(c[name]["steady_epoch_seconds"], 2)) for name in ("digits", "lightning")]
    rows.append(("digits / Lightning", "", "", times(result["fit_ratio"]), "",
                 times(result["steady_epoch_ratio"])))
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    return [Table("Peer: digits' Trainer vs PyTorch Lightning, same network",
                  ("", "parameters", "precision", "fit", "first epoch", "steady epoch"), rows,
                  [f"{result['epochs']}-epoch fits on {c['digits']['train_images']:,} images "
                   f"({result.get('dataset', 'mnist-5k')}), "
                   f"each in a fresh process, {result['repeats']} alternating rounds; medians "
                   "('fit' ratio: the median of each round's ratio; goal <= 0.80). digits: "
                   "its default Trainer and callbacks, augmentation included; Lightning "
                   f"({versions}): TensorBoardLogger and ModelCheckpoint, in-memory batches, "
                   "no augmentation."])]


def worker_peer_digits(args: dict) -> dict:
    """One default digits fit: the Trainer with its default callbacks, the default cnn."""
    import digits
    from benchmarks.common import make_epoch_clock, quiet_stdout, subset

    data = subset(digits.load_dataset(args.get("dataset", "mnist-5k"), announce=False),
                  train=args.get("train"))
    clock = make_epoch_clock()
    with quiet_stdout():
        start = time.perf_counter()
        trainer = digits.Trainer(max_epochs=args["epochs"], log_dir=args["log_dir"],
                                 callbacks=None, verbose=False)
        trainer.callbacks.append(clock)
        model = trainer.build_model("cnn")
        trainer.fit(model, data)
        fit_seconds = time.perf_counter() - start
    return {"fit_seconds": fit_seconds, "epoch_seconds": clock.epoch_seconds(),
            "parameters": int(model.count_params()), "precision": trainer.precision,
            "train_images": len(data.train)}


def worker_peer_lightning(args: dict) -> dict:
    """The same network, data and recipe trained by PyTorch Lightning."""
    import lightning
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch import nn

    import digits
    from benchmarks.common import subset

    data = subset(digits.load_dataset(args.get("dataset", "mnist-5k"), announce=False),
                  train=args.get("train"))
    torch.manual_seed(0)

    def images(split):  # NCHW float tensors, labels as int64
        return (torch.from_numpy(split.x.reshape(-1, 1, 28, 28).astype("float32")),
                torch.from_numpy(split.y.astype("int64")))

    network = nn.Sequential(
        *_blocks(nn), nn.Flatten(), nn.Linear(128 * 3 * 3, 256, bias=False),
        nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.4), nn.Linear(256, 10))

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.network = network
            self.loss = nn.CrossEntropyLoss(label_smoothing=0.1)

        def training_step(self, batch, _):
            x, y = batch
            loss = self.loss(self.network(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            logits = self.network(x)
            self.log("val_loss", self.loss(logits, y))
            self.log("val_accuracy", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=2e-3)

    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*images(data.train)),
                                        batch_size=128, shuffle=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*images(data.val)),
                                      batch_size=512)
    epoch_starts: list[float] = []

    class Clock(lightning.Callback):
        def on_train_epoch_start(self, trainer, module):
            epoch_starts.append(time.perf_counter())

    module = Module()
    start = time.perf_counter()
    trainer = lightning.Trainer(
        max_epochs=args["epochs"], accelerator="cpu", devices=1,
        logger=TensorBoardLogger(args["log_dir"]),
        callbacks=[ModelCheckpoint(monitor="val_loss"), Clock()],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train, val)
    end = time.perf_counter()
    bounds = [*epoch_starts, end]
    return {"fit_seconds": end - start,
            "epoch_seconds": [b - a for a, b in itertools.pairwise(bounds)],
            # Counted as Keras counts: batch norm's moving mean and variance included.
            "parameters": sum(p.numel() for p in network.parameters()) + sum(
                b.numel() for name, b in network.named_buffers() if name.endswith(
                    ("running_mean", "running_var"))),
            "precision": str(trainer.precision), "train_images": len(data.train),
            "versions": {"lightning": lightning.__version__, "torch": torch.__version__}}


def _blocks(nn) -> list:
    """Three blocks of (3x3 conv without bias, batch norm, ReLU) x2 and a 2x2 max pool."""
    layers, cin = [], 1
    for width in (32, 64, 128):
        for _ in range(2):
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU()]
            cin = width
        layers.append(nn.MaxPool2d(2))
    return layers
