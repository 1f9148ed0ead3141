#!/usr/bin/env python
"""Benchmarks: what the Trainer and its callbacks cost, how fast models train, start and scale.

One command measures everything side by side: contenders alternate (A B, then B A, ...) after
a warm-up, and the tables show medians and ratios, never a lone absolute time. The machine this
runs on is often shared, so only times taken next to each other compare. Everything that can
run in this one process does; a setting that must be made before TensorFlow starts (threads,
oneDNN) and anything whose memory or start-up is measured runs in a subprocess.

Usage:
    python scripts/bench.py [--only SECTIONS] [--epochs E] [--repeats R] [--overhead-repeats R]
                            [--c-repeats R] [--quick]
                            [--out bench.json] [--markdown BENCHMARKS.md]
                            [--tune-metrics PATH] [--fashion-epochs N]

Sections (all but `fashion`, `deploy` and `search` run by default):
    overhead    A: the notebook's `model.fit` on NumPy arrays; B: `Trainer.fit` with its default
                callbacks; each in a warm process of its own (A with TensorFlow's defaults,
                B after `import digits`); C: the Trainer with no callbacks vs raw Keras `fit`
                on the identical tf.data pipeline, compiled alike. Goals: B/A <= 0.80,
                C <= 1.02.
    callbacks   each default callback's time per epoch as a share of B's epoch, timed inside
                B's own fits, and its cost per `Trainer.test`. Goal: confusion_matrix <= 5%.
    throughput  images/s, training and inference, of seed-cnn, cnn and mlp (--quick: cnn) with
                steps_per_execution 1 vs auto; TensorFlow thread settings and oneDNN (each in
                a subprocess); XLA once; mixed precision on vs off where there is a GPU.
    startup     `python -m digits.train --help` (goal <= 1 s, no TensorFlow import) and the
                time from launch to the end of the first training step.
    scale       one epoch of Fashion-MNIST at 5k, 15k and all 60k images, each in a subprocess:
                images/s, peak RSS (goal <= 3 GB) and how time grows with the images.
    accuracy    official MNIST test accuracy of seed-cnn and cnn trained on the 5,000 embedded
                digits, and of a tuning run's best model (`--tune-metrics`).
    predict     reading your own images: finding the digits in photo-like images (ms/image,
                with and without decoding the file) and `python -m digits.predict` on 1,000
                of them (images/s, and per image beyond its start-up). Reading accuracy per
                kind needs fully trained models: scripts/read_photos.py.
    fashion     only when named: Fashion-MNIST test accuracy of cnn trained on all 60k images.
    deploy      only when named: exports and servers.
    search      only when named: a 50-trial search's memory (RSS after trial 5 and 50; goal
                within 10%) and trials per minute; two trials at a time (--parallel-trials 2)
                against one, the same search, alternating.

Example:
    python scripts/bench.py --quick --out /tmp/bench.json
    python scripts/bench.py --out bench.json --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
# Run as a script, this directory comes first on sys.path, and its tensorboard.py (the launcher)
# would shadow the package that tf.summary imports: the sections' package is loaded by path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _load_sections_package() -> None:
    spec = importlib.util.spec_from_file_location(
        "benchmarks", HERE / "benchmarks" / "__init__.py",
        submodule_search_locations=[str(HERE / "benchmarks")])
    package = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = package
    spec.loader.exec_module(package)


_load_sections_package()

# The sections import digits before TensorFlow: digits' start-up defaults apply here too.
from benchmarks import (  # noqa: E402
    accuracy,
    callback_costs,
    deploy,
    fashion,
    overhead,
    peer,
    predict,
    scale,
    search,
    startup,
    throughput,
)
from benchmarks.common import (  # noqa: E402
    OFFICIAL_MNIST,
    RESULT_MARK,
    Bench,
    Sizes,
    Table,
    load_average,
    machine_info,
    progress,
)
from benchmarks.report import goal_table, goals, json_default, print_tables, write_markdown  # noqa: E402

# section -> (measure, tables), in the order they run
SECTION_FUNCTIONS = {
    "overhead": (overhead.section_overhead, overhead.overhead_tables),
    "callbacks": (callback_costs.section_callbacks, callback_costs.callback_tables),
    "throughput": (throughput.section_throughput, throughput.throughput_tables),
    "startup": (startup.section_startup, startup.startup_tables),
    "scale": (scale.section_scale, scale.scale_tables),
    "accuracy": (accuracy.section_accuracy, accuracy.accuracy_tables),
    "predict": (predict.section_predict, predict.predict_tables),
    "peer": (peer.section_peer, peer.peer_tables),
    "fashion": (fashion.section_fashion, fashion.fashion_tables),
    "deploy": (deploy.section_deploy, deploy.deploy_tables),
    "search": (search.section_search, search.search_tables),
}
SECTIONS = tuple(SECTION_FUNCTIONS)
DEFAULT_SECTIONS = SECTIONS[:-3]  # fashion, deploy and search run when named
SIZE_OPTIONS = ("epochs", "repeats", "overhead_repeats", "c_repeats", "accuracy_epochs",
                "fashion_epochs", "peer_epochs", "peer_repeats")  # command-line options that override a `Sizes` field
WORKERS = {"throughput": throughput.worker_throughput, "first-step": startup.worker_first_step,
           "scale": scale.worker_scale, "peer-digits": peer.worker_peer_digits,
           "peer-lightning": peer.worker_peer_lightning}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sections: " + ", ".join(SECTIONS) + " (fashion, deploy and search only when "
               "named).")
    parser.add_argument("--only", default=None, metavar="SECTIONS",
                        help="comma-separated sections to run (default: all but fashion, deploy "
                             "and search)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of each overhead fit (default 3; --quick 1)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="alternating rounds of each throughput comparison (default 4; "
                             "--quick 1)")
    parser.add_argument("--overhead-repeats", type=int, default=None,
                        help="alternating rounds of the overhead fits (default 3; --quick 1)")
    parser.add_argument("--c-repeats", type=int, default=None,
                        help="rounds of C's pairs (default 4; A and B keep --overhead-repeats)")
    parser.add_argument("--accuracy-epochs", type=int, default=None,
                        help="epochs for the accuracy section (default 6)")
    parser.add_argument("--fashion-epochs", type=int, default=None,
                        help="epochs for the fashion section (default 3)")
    parser.add_argument("--peer-epochs", type=int, default=None,
                        help="epochs of each peer fit (default: --epochs)")
    parser.add_argument("--peer-repeats", type=int, default=None,
                        help="alternating rounds of the peer fits (default 3; --quick 1)")
    parser.add_argument("--peer-dataset", default=None, metavar="SPEC",
                        help="the peer section's data, a digits dataset spec (default mnist-5k; "
                             "e.g. the full MNIST's directory, to compare at 60,000 images)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that every section runs, measures nothing useful")
    parser.add_argument("--out", default=None, metavar="FILE.json", help="write the results as JSON")
    parser.add_argument("--markdown", default=None, metavar="FILE.md",
                        help="write the tables, machine and command (e.g. BENCHMARKS.md)")
    parser.add_argument("--tune-metrics", default=None, metavar="PATH",
                        help="metrics.json of a tuning run's best model (<project>/best/version_N)")
    parser.add_argument("--deploy-model", type=Path, default=None, metavar="MODEL.keras",
                        help="the model the deploy section exports and serves (default: the "
                             "default cnn, trained for a few epochs)")
    parser.add_argument("--mnist-test", type=Path, default=OFFICIAL_MNIST, metavar="DIR",
                        help=f"the official MNIST test set (default {OFFICIAL_MNIST})")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=("notebook", "trainer"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(DEFAULT_SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in SIZE_OPTIONS:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.sections = [s for s in SECTIONS if s in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return overhead.serve(args.serve)
    if args.worker:
        kind, payload = args.worker
        result = WORKERS[kind](json.loads(payload))
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0
    sizes = Sizes.quick() if args.quick else Sizes()
    for name in SIZE_OPTIONS:
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    if args.peer_dataset is not None:
        sizes.peer_dataset = args.peer_dataset

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices: every contender builds fresh models
    started = time.perf_counter()
    given = sys.argv[1:] if argv is None else argv
    report = {
        "command": " ".join(["python scripts/bench.py", *map(shlex.quote, given)]),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "sizes": dataclasses.asdict(sizes),
        "sections_run": args.sections,
        "load": {"start": load_average()},
        "sections": {},
    }
    tables: list[Table] = []
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp:
        bench = Bench(args, sizes, Path(tmp))
        bench.machine = report["machine"] = machine_info()
        for name in args.sections:
            measure, render = SECTION_FUNCTIONS[name]
            progress(f"{name}: start (load average {load_average()})")
            section_start = time.perf_counter()
            result = measure(bench)
            result["seconds"] = time.perf_counter() - section_start
            result["load_average_after"] = load_average()
            report["sections"][name] = result
            tables += render(result)
            progress(f"{name}: done in {result['seconds']:.0f} s")
    report["load"]["end"] = load_average()
    report["goals"] = goals(report["sections"])
    report["seconds"] = time.perf_counter() - started
    tables.append(goal_table(report["goals"]))
    print_tables(tables)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=json_default) + "\n")
    if args.markdown:
        write_markdown(Path(args.markdown), report, tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
