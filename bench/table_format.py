"""The slimdrive table as Markdown (`bench.table` makes the figures): one block of closed-loop figures per suite,
then one block of what a step costs. Printed by `slimdrive table` and written to ``table.md``."""
from __future__ import annotations

from typing import Any

# (metric in the result, column header, decimals)
DRIVING = (("driving_score", "DS", 2), ("route_completion", "RC", 2), ("infraction_penalty", "IP", 3),
           ("pedestrian_collisions_per_km", "ped. coll./km", 3), ("vehicle_collisions_per_km", "veh. coll./km", 3),
           ("success_rate", "success", 2))


def _cell(figure: dict[str, Any], decimals: int) -> str:
    if figure["std"] is None:
        return f"{figure['mean']:.{decimals}f}"
    return f"{figure['mean']:.{decimals}f} ± {figure['std']:.{decimals}f}"


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _driving(label: str, suite: dict[str, Any], rows: dict[str, Any]) -> list[str]:
    limit = f", first {suite['limit']}" if suite["limit"] else ""
    lines = [f"### {label}: {suite['name']} ({suite['episodes']} episodes{limit}; mean ± std over training seeds)",
             "", _line(["policy", "seeds"] + [header for _, header, _ in DRIVING]),
             _line(["---"] * (2 + len(DRIVING)))]
    for row in rows.values():
        figures = row["suites"][label]
        lines.append(_line([row["label"], str(len(figures["evaluations"]))]
                           + [_cell(figures[metric], decimals) for metric, _, decimals in DRIVING]))
    return lines + [""]


def _compute(result: dict[str, Any]) -> list[str]:
    compute = result["compute"]
    how = (f"batch 1, {compute['cameras']} cameras resized to {compute['network_input']} in every step, "
           f"{compute['iterations']} timed steps each in turns, {compute['threads']} threads, "
           f"{result['machine']['cpu']}" if compute else "no policy row")
    lines = [f"### What a step costs ({how})", "",
             _line(["policy", "weights resident (B)", "on disk (B)", "latency p50 (ms)", "p99 (ms)", "camera frames/s",
                    "deadline misses / decisions", "arithmetic energy/step (uJ)"]),
             _line(["---"] * 8)]
    for row in result["rows"].values():
        suites = row["suites"].values()
        missed = sum(sum(s["missed_deadlines"]["per_seed"]) for s in suites)
        misses = f"{missed:g} / {sum(s['decisions'] for s in suites)}"
        c = row["compute"]
        if c is None:  # the expert reads the simulator: no weights, no images, no arithmetic to price
            lines.append(_line([row["label"], "-", "-", "-", "-", "-", misses, "-"]))
            continue
        disk = "-" if c["weight_bytes_disk"] is None else f"{c['weight_bytes_disk']:,}"
        lines.append(_line([row["label"], f"{c['weight_bytes_resident']:,}", disk, f"{c['latency_ms_p50']:.2f}",
                            f"{c['latency_ms_p99']:.2f}", f"{c['camera_frames_per_s']:,.0f}", misses,
                            f"{c['arithmetic_energy_uj_per_step']:.2f}"]))
    return lines + [""]


def markdown(result: dict[str, Any]) -> str:
    budget = result["budget"]
    device = budget["device"]  # a profile's name (conf/budget/devices/) or its fields
    device = device["name"] if isinstance(device, dict) else device
    latency = "measured around act()" if budget["latency"] == "measured" else f"priced on the {device} roofline"
    deadline = (f"{budget['deadline_ms']:g} ms" if budget.get("deadline_ms") is not None
                else f"{budget['deadline_ms_per_camera']:g} ms per camera frame")
    lines = ["## The slimdrive table", "",
             f"Budget: deadline {deadline} ({latency}, fallback {budget['fallback']}); "
             f"env rig {result['env']['rig']}; scoring by `slimdrive eval` (CARLA Leaderboard 2.0); arithmetic "
             f"energy from {result['energy_source']}.", ""]
    for label, suite in result["suites"].items():
        lines += _driving(label, suite, result["rows"])
    return "\n".join(lines + _compute(result))
