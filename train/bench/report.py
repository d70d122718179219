"""The printed report of `merclip bench` (one stream's result, or many served streams'): every figure
says what it measures."""

from __future__ import annotations

import math


def sig3(x: float) -> str:
    """``x`` to 3 significant digits, never in e-notation (1.62, 45.6, 238, 1,230)."""
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    rounded = float(f"{x:.3g}")  # rounded first: 9.996 is 10.0, not 10.00
    return f"{rounded:,.{max(0, 2 - math.floor(math.log10(abs(rounded))))}f}"


def throughput_lines(result: dict) -> list[str]:
    """The throughput figures, each saying what it measures; batching is compared model-alone to model-alone."""
    lines = []
    if "pipeline_windows_per_s" in result:
        lines.append(
            f"whole pipeline, 1 stream (serial sum of all stages, ASR included): "
            f"{sig3(result['pipeline_windows_per_s'])} windows/s"
        )
    model = result.get("model_windows_per_s") or {}
    one = model.get("1")
    for n, rate in sorted(model.items(), key=lambda kv: int(kv[0])):
        if n == "1":
            lines.append(f"model alone (encoders + fusion), 1 window per call: {sig3(rate)} windows/s")
        else:
            gain = f" ({sig3(rate / one)}x the 1-window figure)" if one else ""
            lines.append(f"model alone (encoders + fusion), {n} windows batched: {sig3(rate)} windows/s{gain}")
    return lines


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]merclip bench[/bold] — {result['machine']}; providers: {', '.join(result['providers'])}")
    runtime = result.get("runtime") or {"line": "", "backend": "onnxruntime", "precision": "fp32"}
    if runtime["line"]:
        console.print(f"default runtime: {runtime['line']}", markup=False, highlight=False)
    ratios = Table(title="ratios (same run)")
    ratios.add_column("ratio")
    ratios.add_column("x", justify="right")
    for key, value in result["ratios"].items():
        ratios.add_row(key, f"{value:.2f}")
    console.print(ratios)
    table = Table(
        title=f"latency per window (ms), {result['options']['frames']} frames, model {result['options']['model']}"
    )
    for col in ("stage", "min", "median", "p95"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for stage, s in result["latency_ms"].items():
        table.add_row(stage, f"{s['min']:.1f}", f"{s['median']:.1f}", f"{s['p95']:.1f}")
    console.print(table)
    console.print(f"real-time factor {result['real_time_factor']:.3f} (serial processing time / 2-s window)")
    for line in throughput_lines(result):
        console.print(line)
    console.print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    default = f"default runtime ({runtime['backend']} {runtime['precision']})"
    for key, what in (("end_to_end", f"{default}, encoders beside ASR"), ("end_to_end_serial", f"{default}, serial"),
                      ("end_to_end_bf16", "OpenVINO bf16, encoders beside ASR"),
                      ("end_to_end_int8", "int8 bundle, encoders beside ASR")):  # fmt: skip
        if key not in result:
            continue
        e2e = result[key]
        console.print(
            f"end to end, {what} (sample clip, real-time pace): window-end-to-reading latency median "
            f"{e2e['latency']['median']:.0f} ms, p95 {e2e['latency']['p95']:.0f} ms, "
            f"{e2e['readings']} readings, {e2e['dropped']} dropped; transcript WER {e2e['wer']:.3f}; "
            f"word-to-screen delay median {e2e['word_to_screen_s']['median']:.2f} s, "
            f"p95 {e2e['word_to_screen_s']['p95']:.2f} s ({e2e['word_to_screen_s']['words']} words)"
        )
    if "face" in result["latency_ms"]:
        f = result["face"]
        console.print(
            f"face stage (detect + follow + crop, per frame): median {result['latency_ms']['face']['median']:.1f} ms;"
            f" a face in {f['windows_with_face']} of {f['windows']} sample windows"
        )
    console.print(f"speech paths on the sample clip, WER: {result['asr_wer']}")
    for name in ("bf16", "int8"):
        if f"{name}_agreement" in result:
            console.print(f"{name} vs fp32 readings (the 6 sample windows): {result[f'{name}_agreement']}")
    for precision, record in result.get("agreement", {}).items():
        gate = "passes" if record.get("passed") else "fails"
        console.print(
            f"{precision} vs {record['reference']} ({record['readings']} readings): top emotion "
            f"{record['top_emotion_agreement']:.1%}, mean |dp| {record['mean_abs_dp']:.4f}: {gate} the gate"
        )
    if "soak" in result:
        s = result["soak"]
        console.print(
            f"soak: {s['stream_s']:.0f} s of stream in {s['wall_s']:.0f} s, {s['windows']} windows; processing "
            f"ms per tenth {[round(x) for x in s['processing_ms_median_per_tenth']]}; RSS MB per tenth "
            f"{[round(x) for x in s['rss_mb_per_tenth']]}; words per tenth {s['words_per_tenth']} ({s['audio']})"
        )


def print_streams(result: dict) -> None:
    """Many served streams: one line per stream count, throughput and p95 latency as ratios to the first."""
    where = "local service" if result["serve"] is not None else result["server"]
    print(f"{result['machine']} · {result['model']}, {result['frames']} frames/window · "
          f"{where} · streams as fast as possible (backpressure)")  # fmt: skip
    print(f"{'streams':>7} {'windows/s':>10} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8} {'p95 ratio':>9} "
          f"{'mean batch':>10} {'dropped':>7}")  # fmt: skip
    for r in result["runs"]:
        lat = r["latency_ms"]
        print(f"{r['streams']:>7} {r['windows_per_s']:>10.2f} {r['throughput_ratio']:>6.2f} {lat['p50']:>8.0f} "
              f"{lat['p95']:>8.0f} {r['p95_ratio']:>9.2f} {r['mean_batch']:>10.2f} {r['dropped']:>7}")  # fmt: skip
