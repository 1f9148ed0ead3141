"""The goals, and the tables on the terminal and in BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import Table, gigabytes, percent, seconds, times


def goals(sections: dict) -> list[dict]:
    """Each goal of the issue that this run measured: its value, its limit, and whether met."""
    found = []

    def add(name, value, limit, met):
        if value is not None:
            found.append({"goal": name, "value": value, "limit": limit, "met": bool(met)})

    if "overhead" in sections:
        r = sections["overhead"]["ratios"]
        # Judged on the median of the per-round ratios: each pair ran back to back, so a slow
        # minute of the machine hits both sides; medians of each side come from different
        # rounds ("of medians", shown beside it in the ratio table).
        b_a, c = r["B/A"]["median_of_pairs"], r["C"]["median_of_pairs"]
        add("B/A: Trainer with default callbacks vs the notebook's fit", b_a, "<= 0.80",
            b_a is not None and b_a <= 0.80)
        add("C: Trainer without callbacks vs raw Keras fit", c, "<= 1.02",
            c is not None and c <= 1.02)
        first = sections["overhead"]["contenders"]["B"].get("first_epoch_overhead_seconds")
        add("B's first epoch minus a steady one, seconds", first, "<= 0.5 s",
            first is not None and first <= 0.5)
    if "throughput" in sections:
        cnn = sections["throughput"]["models"].get("cnn", {})
        bf16 = cnn.get("bf16_over_float32_train")
        add("cnn training, mixed_bfloat16 over float32", bf16, ">= 1.5x",
            bf16 is not None and bf16 >= 1.5)
        share = cnn.get("spe_auto", {}).get("share_of_peak")
        add("cnn float32 training, share of the float32 matmul peak", share, ">= 70%",
            share is not None and share >= 0.70)
    if "callbacks" in sections:
        cm = sections["callbacks"]["callbacks"].get("confusion_matrix")
        if cm:
            share = cm.get("share_all_work", cm.get("share_with_metric", cm["share_of_epoch"]))
            add("confusion_matrix share of an epoch", share, "<= 5%", share <= 0.05)
    if "startup" in sections:
        s = sections["startup"]
        add("digits.train --help seconds", s["help_seconds"], "<= 1 s", s["help_seconds"] <= 1.0)
        add("digits.train --help imports TensorFlow", s["help_imports_tensorflow"], "no",
            not s["help_imports_tensorflow"])
    if "scale" in sections and sections["scale"]["peak_rss_bytes"]:
        rss = sections["scale"]["peak_rss_bytes"]
        add("peak RSS, one Fashion-MNIST epoch (bytes)", rss, "<= 3 GB", rss <= 3 * 1024**3)
    if "predict" in sections:
        ms = sections["predict"]["find_ms"]
        add("finding the digits in a photo (<= 1 megapixel), median ms", ms, "<= 5 ms", ms <= 5)
    if "deploy" in sections:
        d = sections["deploy"]
        fast = d["served"][d["fast_path"]]
        add("serving a drawn digit, fast path, one client, p99 ms", fast["alone"]["p99_ms"],
            "< 20 ms", fast["alone"]["p99_ms"] < 20)
        most = max(r["requests_per_second"] for label, r in d["served"].items()
                   if label.startswith(d["fast_path"]))
        add("serving a drawn digit, fast path, 8 clients, requests/s", most, "> 200", most > 200)
    return found


def goal_table(found: list[dict]) -> Table:
    rows = []
    for g in found:
        value = g["value"]
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif "share" in g["goal"]:
            text = percent(value)
        elif "bytes" in g["goal"]:
            text = gigabytes(value)
        elif "seconds" in g["goal"]:
            text = seconds(value)
        elif g["goal"].endswith(" ms"):
            text = f"{value:.1f} ms"
        elif "requests/s" in g["goal"]:
            text = f"{value:.0f}"
        else:
            text = times(value)
        rows.append((g["goal"], text, g["limit"], "met" if g["met"] else "NOT MET"))
    return Table("Goals", ("goal", "measured", "limit", ""), rows)


def print_tables(tables: list[Table]) -> None:
    from rich.table import Table as RichTable

    from digits.callbacks.console import make_console, table_box

    console = make_console()
    for table in tables:
        rich_table = RichTable(title=table.title, title_justify="left", box=table_box(console))
        for header in table.headers:
            rich_table.add_column(header)
        for row in table.rows:
            rich_table.add_row(*[str(cell) for cell in row])
        console.print(rich_table)
        for note in table.notes:
            console.print(note, style="dim", highlight=False, markup=False)
        console.print()


def markdown_tables(tables: list[Table]) -> str:
    parts = []
    for table in tables:
        lines = [f"### {table.title}", "", "| " + " | ".join(table.headers) + " |",
                 "|" + "|".join(" --- " for _ in table.headers) + "|"]
        for row in table.rows:
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
        for note in table.notes:
            lines += ["", note]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


NOTES_MARKER = "<!-- Everything below this line is kept when scripts/bench.py rewrites the file. -->"


def write_markdown(path: Path, report: dict, tables: list[Table]) -> None:
    """BENCHMARKS.md: the command, the machine and its load, then the tables; notes kept."""
    m = report["machine"]
    kept = ""
    if path.is_file():
        text = path.read_text()
        if NOTES_MARKER in text:
            kept = text[text.index(NOTES_MARKER):]
    load = report["load"]
    head = [
        "# Benchmarks",
        "",
        "Measured by `scripts/bench.py`; every figure below comes from its latest run. "
        "Contenders alternate after a warm-up and the tables show medians and ratios.",
        "",
        "To reproduce:",
        "",
        "```bash",
        report["command"],
        "```",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| CPU | {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable) |",
        f"| memory | {gigabytes(m['memory_bytes'])} |",
        f"| GPU | {', '.join(m['gpus']) or 'none'} |",
        f"| software | Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
        f"TF_ENABLE_ONEDNN_OPTS={m['tf_enable_onednn_opts']} |",
        f"| load average (1, 5, 15 min) | at the start {load['start']}, at the end {load['end']} |",
        f"| run | {report['started']}, {report['seconds'] / 60:.1f} minutes |",
        "",
    ]
    path.write_text("\n".join(head) + "\n" + markdown_tables(tables) + "\n\n"
                    + (kept or NOTES_MARKER + "\n"))


def json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
