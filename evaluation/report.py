"""Evaluation reports: `report.html` of one run (`slimdrive eval` writes it, `slimdrive report RUN_DIR` rebuilds
it) and the comparison of runs of one suite (`slimdrive report compare RUN_A RUN_B ...`).

`report.html` is one self-contained file: no network, every picture inline (base64 PNG, drawn by matplotlib),
links to the episodes' videos beside it (`videos/`). It holds the suite's driving score, route completion and
infraction penalty with their spread over seeds (each seed's suite score, then mean, standard deviation, min
and max), per-scenario and per-weather tables, infractions per km, the compute budget (latency histogram against
the deadline, deadline misses, fallback steps, headroom) and, per episode, its figures and infractions with
speed, distance to the nearest vehicle or walker and time-to-collision over time (from `traces/`).

The comparison pairs the runs' episodes (same scenario and seed), so a run's difference from the first is
measured on the same episodes; its uncertainty is a paired bootstrap over episodes: resample the shared
episodes with replacement, recompute each scenario's mean difference, and report the central `confidence`
interval.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG bytes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from envs.config import load_conf  # noqa: E402
from scenarios import metrics  # noqa: E402

from .runs import EvalLogError, Run, RunError, key, load_run  # noqa: E402
from .traces import load_trace  # noqa: E402

REPORT = "report.html"
FIGURES = ("driving_score", "route_completion", "infraction_penalty")
SHORT = {"driving_score": "DS", "route_completion": "RC", "infraction_penalty": "IP"}

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}.bad{color:#b00}.ep{border-top:2px solid #ddd;margin-top:1.5em}
img{max-width:100%}code{background:#f4f4f4;padding:0 3px}"""


# ------------------------------------------------------------------------------------------------ figures
def _png(fig) -> str:
    """A figure as an inline <img> (base64 PNG), then closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def episode_figure(trace: dict[str, np.ndarray], title: str):
    """Speed, distance to the nearest vehicle or walker, and TTC over simulated time; infractions marked."""
    t = trace["t"]
    fig, axes = plt.subplots(3, 1, figsize=(8, 4.6), sharex=True)
    ttc = np.where(np.isfinite(trace["ttc_s"]), trace["ttc_s"], np.nan)  # inf: no collision course (not drawn)
    nearest = np.where(np.isfinite(trace["nearest_m"]), trace["nearest_m"], np.nan)
    for ax, values, label in zip(axes, (trace["speed"] * 3.6, nearest, ttc),
                                 ("speed (km/h)", "nearest actor (m)", f"TTC (s, <{metrics.TTC_HORIZON_S:g})")):
        ax.plot(t, values, lw=1.2)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        for when, kind in zip(trace["infraction_t"], trace["infraction_kind"]):
            ax.axvline(float(when), color="#c00", lw=0.8, ls="--")
            if ax is axes[0]:
                ax.annotate(str(kind), (float(when), ax.get_ylim()[1]), fontsize=7, color="#c00", rotation=90,
                            va="top", ha="right")
    axes[-1].set_xlabel("simulated time (s)")
    axes[0].set_title(title, fontsize=9)
    return fig


def latency_figure(latencies: np.ndarray, deadline_ms: float, bins: int):
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.hist(latencies, bins=bins, color="#4a7fb5")
    ax.axvline(deadline_ms, color="#c00", ls="--", label=f"deadline {deadline_ms:g} ms")
    ax.set_xlabel("decision latency (ms)")
    ax.set_ylabel("decisions")
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------------ tables
def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{cell}</td>' for i, cell in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _spread(values: list[float]) -> str:
    """mean ± sample standard deviation (± nothing for one value)."""
    if len(values) < 2:
        return f"{np.mean(values):.2f}" if values else "-"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def per_seed(records: list[dict]) -> dict[int, dict[str, float]]:
    """Each seed's suite figures: DS as the Leaderboard's global score over that seed's routes, RC and IP means."""
    seeds: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        seeds[r["seed"]].append(r)
    return {seed: {"driving_score": metrics.global_score([r["driving_score"] for r in rows]),
                   "route_completion": float(np.mean([r["route_completion"] for r in rows])),
                   "infraction_penalty": float(np.mean([r["infraction_penalty"] for r in rows]))}
            for seed, rows in sorted(seeds.items())}


def _group_rows(records: list[dict], field: str) -> list[list]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[str(r[field])].append(r)
    rows = []
    for name, group in sorted(groups.items()):
        kinds = defaultdict(int)
        for r in group:
            for i in r["infractions"]:
                kinds[i["kind"]] += 1
        rows.append([html.escape(name), len(group), *(_spread([r[f] for r in group]) for f in FIGURES),
                     f"{np.mean([r['success'] for r in group]):.2f}",
                     html.escape(", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "-")])
    return rows


# ------------------------------------------------------------------------------------------------ report
def build(run: Run, settings: DictConfig) -> str:
    """The report of `run` as one HTML document."""
    res, records = run.results, run.records
    seeds = per_seed(records)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(res['suite'])} - "
             f"{html.escape(str(res['agent']))}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(res['suite'])}: agent <code>{html.escape(str(res['agent']))}</code></h1>",
             f"<p>precision {html.escape(str(res.get('precision')))}, scoring {html.escape(res['scoring_version'])}, "
             f"code {html.escape(str(res.get('code_version')))}, {res['episodes_run']} of {res['episodes_planned']} "
             f"episodes, seeds {res['seeds']}.</p>"]
    if res.get("scoring_deviations"):
        parts.append("<p>Differences from the Leaderboard 2.0 rules:</p><ul>" + "".join(
            f"<li>{html.escape(str(d))}</li>" for d in res["scoring_deviations"]) + "</ul>")
    parts.append("<h2>Suite</h2>")
    rows = [[SHORT[f], f"{res[f]:.2f}", _spread([s[f] for s in seeds.values()]),
             f"{min(s[f] for s in seeds.values()):.2f}" if seeds else "-",
             f"{max(s[f] for s in seeds.values()):.2f}" if seeds else "-",
             " ".join(f"{s[f]:.2f}" for s in seeds.values())] for f in FIGURES]
    parts.append(_table(["figure", "all episodes", "over seeds: mean ± std", "min", "max", "per seed"], rows))
    parts.append(f"<p>success rate {res['success_rate']:.2f}, comfort {res['comfort']:.2f}, minimum TTC "
                 f"{res['min_ttc_s'] if res['min_ttc_s'] is not None else '-'} s.</p>")
    header = ["", "episodes", "DS", "RC", "IP", "success", "infractions"]
    parts += ["<h2>Per scenario</h2>", _table(["scenario", *header[1:]], _group_rows(records, "scenario")),
              "<h2>Per weather</h2>", _table(["weather", *header[1:]], _group_rows(records, "weather"))]
    per_km = res.get("infractions_per_km") or {}
    km = sum(r["route_length_m"] / 1000 * r["route_completion"] / 100 for r in records)
    counts = defaultdict(int)
    for r in records:
        for i in r["infractions"]:
            counts[i["kind"]] += 1
    parts += [f"<h2>Infractions per km</h2><p>{km:.3f} km driven (route length x completion).</p>",
              _table(["infraction", "count", "per km"],
                     [[html.escape(k), counts[k], f"{v:.3f}"] for k, v in sorted(per_km.items())]) if per_km
              else "<p>none</p>"]
    parts.append(budget_section(run, settings))
    parts.append("<h2>Episodes</h2>")
    for r in records:
        parts.append(episode_section(run, r, settings))
    parts.append("</body></html>")
    return "\n".join(parts)


def budget_section(run: Run, settings: DictConfig) -> str:
    records = run.records
    stats = [r["budget"] for r in records]
    latencies = [load_trace(run.folder, r["scenario"], r["seed"]) for r in records]
    lat = np.concatenate([t["latencies_ms"] for t in latencies if t is not None] or [np.zeros(0)])
    deadline = stats[0].get("deadline_ms") if stats else None  # one budget for the whole run
    total = {k: sum(s.get(k, 0) for s in stats) for k in ("steps", "decisions", "missed_deadlines",
                                                           "fallback_steps", "held_steps")}
    source = ", ".join(sorted({str(s.get("latency_source", "measured")) for s in stats})) or "-"
    rows = [["deadline (ms)", f"{deadline:g}" if deadline is not None else "-"], ["latency source", source],
            *[[k.replace("_", " "), v] for k, v in total.items()]]
    out = ["<h2>Compute budget</h2>"]
    if len(lat):
        p50, p99, worst = np.percentile(lat, 50), np.percentile(lat, 99), lat.max()
        rows += [["latency p50 / p99 / max (ms)", f"{p50:.3f} / {p99:.3f} / {worst:.3f}"]]
        if deadline:
            rows += [["headroom at p99 (ms, % of deadline)",
                      f"{deadline - p99:.3f} ({100 * (deadline - p99) / deadline:.0f} %)"],
                     ["decisions over the deadline", f"{int((lat > deadline).sum())} of {len(lat)}"]]
    out.append(_table(["", "value"], [[html.escape(str(a)), html.escape(str(b))] for a, b in rows]))
    if len(lat) and np.ptp(lat) > 0:
        out.append(_png(latency_figure(lat, deadline or 0.0, int(settings.histogram_bins))))
    elif len(lat):
        out.append(f"<p>every decision took {lat[0]:.3f} ms ({source}): no histogram to draw.</p>")
    return "\n".join(out)


def episode_section(run: Run, r: dict, settings: DictConfig) -> str:
    k = key(r)
    failed = "" if r["success"] else ' class="bad"'
    out = [f'<div class="ep" id="{html.escape(k)}"><h3{failed}>{html.escape(k)}</h3>',
           f"<p><code>{html.escape(r['file'])}</code>, weather {html.escape(str(r['weather']))}, ended: "
           f"{html.escape(str(r['done']))}. DS {r['driving_score']:.2f}, RC {r['route_completion']:.2f}, "
           f"IP {r['infraction_penalty']:.3f}, success {r['success']}, {r['steps']} steps, budget: "
           f"{r['budget'].get('missed_deadlines', 0)} missed deadlines, {r['budget'].get('fallback_steps', 0)} "
           "fallback steps.</p>"]
    if r["infractions"]:
        out.append("<p>Infractions: " + ", ".join(
            f"{html.escape(i['kind'])} at {i['sim_time']:.1f} s" for i in r["infractions"]) + "</p>")
    if r.get("simulator_failures"):
        out.append("<p>Simulator failures before this result (retried): " + "; ".join(
            html.escape(f) for f in r["simulator_failures"]) + "</p>")
    video = r.get("video")
    if video and (run.folder / video).exists():
        out.append(f'<p><a href="{html.escape(video)}">video</a></p>')
    trace = load_trace(run.folder, r["scenario"], r["seed"])
    if trace is None:
        out.append("<p>no trace recorded for this episode</p>")
    elif settings.episode_plots and len(trace["t"]):
        out.append(_png(episode_figure(trace, k)))
    out.append("</div>")
    return "\n".join(out)


def write(folder: str | Path, settings: DictConfig | None = None) -> Path:
    """Write `<folder>/report.html` for the finished run in `folder`; returns its path."""
    settings = load_conf("report.yaml", settings)
    run = load_run(folder)
    path = run.folder / REPORT
    partial = path.with_name(f".{REPORT}.partial")
    partial.write_text(build(run, settings))
    partial.replace(path)
    return path


# ------------------------------------------------------------------------------------------------ compare
def bootstrap_interval(a: np.ndarray, b: np.ndarray, samples: int, confidence: float,
                       rng: np.random.Generator) -> tuple[float, float, float]:
    """mean(b - a) over paired episodes and its central `confidence` bootstrap interval."""
    diff = np.asarray(b, float) - np.asarray(a, float)
    draws = rng.integers(0, len(diff), size=(samples, len(diff)))
    means = diff[draws].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(diff.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def compare(runs: list[Run], samples: int, confidence: float, seed: int) -> dict:
    """Per scenario and for the whole suite: each run's mean DS and RC on the episodes all runs share, and each
    later run's difference from the first with its bootstrap interval."""
    suites = {r.results["suite"] for r in runs}
    if len(suites) > 1:
        raise RunError("runs of different suites: " + ", ".join(f"{r.folder} ({r.results['suite']})" for r in runs)
                       + "; compare runs of one suite")
    shared = set.intersection(*({key(rec) for rec in r.records} for r in runs))
    if not shared:
        raise RunError("the runs share no episode (scenario and seed): " + ", ".join(str(r.folder) for r in runs))
    order = [key(rec) for rec in runs[0].records if key(rec) in shared]
    by_key = [{key(rec): rec for rec in r.records} for r in runs]
    groups: dict[str, list[str]] = defaultdict(list)
    for k in order:
        groups[by_key[0][k]["scenario"]].append(k)
    rng = np.random.default_rng(seed)
    rows = {}
    for name, keys in [("(suite)", order), *sorted(groups.items())]:
        row = {"episodes": len(keys)}
        for field in ("driving_score", "route_completion"):
            values = [np.array([b[k][field] for k in keys]) for b in by_key]
            row[field] = {"means": [round(float(v.mean()), 3) for v in values],
                          "differences": [dict(zip(("mean", "low", "high"), (round(x, 3) for x in bootstrap_interval(
                              values[0], v, samples, confidence, rng)))) for v in values[1:]]}
        rows[name] = row
    return {"suite": runs[0].results["suite"], "runs": [str(r.folder) for r in runs],
            "agents": [str(r.results["agent"]) for r in runs], "episodes_compared": len(order),
            "episodes_not_shared": {str(r.folder): len(r.records) - len(order) for r in runs},
            "bootstrap": {"samples": samples, "confidence": confidence, "seed": seed, "paired_over": "episodes"},
            "scenarios": rows}


def compare_html(result: dict) -> str:
    names = [f"{Path(f).name} ({a})" for f, a in zip(result["runs"], result["agents"])]
    level = f"{100 * result['bootstrap']['confidence']:g} %"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>compare {html.escape(result['suite'])}"
             f"</title><style>{STYLE}</style></head><body><h1>{html.escape(result['suite'])}: "
             f"{' vs '.join(html.escape(n) for n in names)}</h1>",
             f"<p>{result['episodes_compared']} shared episodes; differences from {html.escape(names[0])} with their "
             f"{level} paired bootstrap interval over episodes ({result['bootstrap']['samples']} resamples).</p>"]
    for field in ("driving_score", "route_completion"):
        header = ["scenario", "episodes", *names, *(f"{n} - {names[0]} [{level}]" for n in names[1:])]
        rows = []
        for scenario, row in result["scenarios"].items():
            diffs = [f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" for d in row[field]["differences"]]
            rows.append([html.escape(scenario), row["episodes"], *(f"{m:.2f}" for m in row[field]["means"]),
                         *diffs])
        parts += [f"<h2>{SHORT[field]} ({field.replace('_', ' ')})</h2>",
                  _table([html.escape(h) for h in header], rows)]
    parts.append("</body></html>")
    return "\n".join(parts)


def print_compare(result: dict) -> None:
    names = [Path(f).name for f in result["runs"]]
    print(f"\n{result['suite']}: DS per scenario, differences from {names[0]} "
          f"[{100 * result['bootstrap']['confidence']:g} % bootstrap]")
    for scenario, row in result["scenarios"].items():
        means = "  ".join(f"{n}={m:.2f}" for n, m in zip(names, row["driving_score"]["means"]))
        diffs = "  ".join(f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
                          for d in row["driving_score"]["differences"])
        print(f"{scenario:34s} n={row['episodes']:<3d} {means}  {diffs}")


# ------------------------------------------------------------------------------------------------ commands
def run(cfg: DictConfig) -> int:
    """`slimdrive report RUN_DIR`."""
    if not cfg.path:
        print("slimdrive report: give the run folder, e.g. slimdrive report runs/eval/rare_events-slimdrive")
        return 2
    try:
        path = write(cfg.path, cfg)
    except (RunError, EvalLogError, ValueError) as exc:
        print(f"slimdrive report: {exc}")
        return 2
    print(f"wrote {path}")
    return 0


def run_compare(cfg: DictConfig) -> int:
    """`slimdrive report compare RUN_A RUN_B ...`."""
    if len(cfg.paths) < 2:
        print("slimdrive report compare: give two or more run folders of one suite (the first is the reference)")
        return 2
    try:
        runs = [load_run(p) for p in cfg.paths]
        result = compare(runs, int(cfg.bootstrap_samples), float(cfg.confidence), int(cfg.seed))
    except (RunError, EvalLogError) as exc:
        print(f"slimdrive report compare: {exc}")
        return 2
    out = Path(cfg.out or Path("runs/compare") / "-vs-".join(r.name for r in runs))
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.html").write_text(compare_html(result))
    print_compare(result)
    print(f"wrote {out / 'compare.html'} and {out / 'compare.json'}")
    return 0
