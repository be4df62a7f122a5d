"""`mer report RUN_DIR`: one self-contained HTML page about a `mer demo` run.

  mer report runs/demo [--out PATH] [--user USER_ID] [--top 8]

Training curves of every model in the run; HR@K per model with 95%
bootstrap intervals (`mer evaluate`'s JSON); one user's history clustered by
DCM in 2-D with the centroids, beside MIND's when the run holds a MIND model
(the paper's Figure 5); and a case study like the paper's Figure 6: the
history grouped by interest and, per user embedding, its top retrieved items
with their topics, implicit and explicit side by side. Plots are PNGs
embedded as data URIs: the page is one file and loads nothing.
"""

from __future__ import annotations

import argparse
import glob
import html
import json
import logging
import os
import sys
import time

log = logging.getLogger("mer.report")

# How many eval records are considered for the case study.
CANDIDATE_RECORDS = 256
MIN_HISTORY = 5


class NotARunDir(ValueError):
    """The directory lacks what the report reads; the message names it."""


def _model_dirs(run_dir: str) -> dict[str, dict]:
    """Trained model directories directly under the run: name -> {dir, kind, summary}."""
    models = {}
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        summary = os.path.join(path, "training.json")
        if os.path.isfile(summary) and os.path.isfile(os.path.join(path, "config.yaml")):
            with open(summary) as handle:
                training = json.load(handle)
            models[name] = {"dir": path, "kind": training.get("kind", "?"), "summary": training}
    return models


def inspect_run(run_dir: str) -> dict:
    """Checks that `run_dir` holds a `mer demo` run and finds its parts.

    Returns: dict `root`, `data`, `export`, `models` (name -> {dir, kind,
    summary}), `implicit` / `explicit` (the DCM and CR model names), `mind`
    (MIND model names), `demo` (demo.json or None).

    Raises:
      NotARunDir: naming everything that is missing.
    """
    if not os.path.isdir(run_dir):
        raise NotARunDir(f"{run_dir}: no such directory (expected a `mer demo --run_dir` output)")
    models = _model_dirs(run_dir)
    kinds = {name: m["kind"] for name, m in models.items()}
    missing = []
    data, export = os.path.join(run_dir, "data"), os.path.join(run_dir, "export")
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        missing.append("data/manifest.json (the prepared data)")
    implicit = next((n for n, k in kinds.items() if k == "dcm"), None)
    explicit = next((n for n, k in kinds.items() if k == "cr"), None)
    if implicit is None:
        missing.append("a trained DCM model (e.g. dcm/config.yaml + dcm/training.json)")
    if explicit is None:
        missing.append("a trained CR model (e.g. cr/config.yaml + cr/training.json)")
    for pattern in ("user_implicit/*/saved_model.pb", "user_explicit/*/saved_model.pb",
                    "index/implicit/*/build.json", "index/explicit/*/build.json"):
        if not glob.glob(os.path.join(export, pattern)):
            missing.append(f"export/{pattern.replace('*', '<version>')}")
    if missing:
        raise NotARunDir(f"{run_dir} is not a `mer demo` run directory: missing {'; '.join(missing)}")
    demo = os.path.join(run_dir, "demo.json")
    return {"root": run_dir, "data": data, "export": export, "models": models, "implicit": implicit,
            "explicit": explicit, "mind": [n for n, k in kinds.items() if k == "mind"],
            "demo": json.load(open(demo)) if os.path.isfile(demo) else None}


def _evaluations(run: dict) -> dict[str, dict]:
    out = {}
    for name, model in run["models"].items():
        path = os.path.join(model["dir"], "evaluation.json")
        if os.path.isfile(path):
            with open(path) as handle:
                out[name] = json.load(handle)
    return out


def hit_rate_rows(evaluations: dict[str, dict]) -> dict[str, dict]:
    """label -> K -> {mean, ci95}: HR, filtered HR and served HR of each evaluated model."""
    rows = {}
    for name, report in evaluations.items():
        for key, label in (("hr", "HR"), ("filtered_hr", "filtered HR"), ("served_hr", "served HR")):
            if key in report:
                rows[f"{name} ({report.get('kind', '?')}) {label}"] = report[key]
    return rows


def figure_data(run: dict, user: str | None) -> dict:
    """The Figure-5 clusters and the chosen eval record (Keras models)."""
    from mer.demo import eval_requests
    from mer.report_case import interest_clusters, pick_user, project_2d
    from trainer.model_io import load_trained

    log.info("loading %s (%s)", run["implicit"], run["models"][run["implicit"]]["dir"])
    cfg, model, _ = load_trained(run["models"][run["implicit"]]["dir"])
    length = cfg.data.history_length
    requests = []
    for request in eval_requests(run["data"], CANDIDATE_RECORDS):
        if len(request["history"]) >= MIN_HISTORY or request["user"] == user:
            requests.append(request | {"history": request["history"][-length:],
                                       "negative": request["negative"][-length:]})
    if not requests:
        raise NotARunDir(f"{run['data']}: no eval record with at least {MIN_HISTORY} engagements")
    clusters = interest_clusters(model, length, requests)
    chosen = pick_user(requests, clusters, user)
    request = requests[chosen]
    log.info("case-study user %s: %d engagements, follows %s", request["user"], len(request["history"]),
             ", ".join(request["topics"]) or "nothing")
    panels = []
    for name in [run["implicit"], *run["mind"]]:
        if name == run["implicit"]:
            found = clusters[chosen]
        else:
            log.info("loading %s (%s)", name, run["models"][name]["dir"])
            mind_cfg, mind, _ = load_trained(run["models"][name]["dir"])
            keep = mind_cfg.data.history_length
            found = interest_clusters(mind, keep, [request | {"history": request["history"][-keep:],
                                                              "negative": request["negative"][-keep:]}])[0]
        points, centroids = project_2d(found)
        panels.append({"title": f"{name} ({run['models'][name]['kind'].upper()}): user {request['user']}, "
                                f"{len(points)} engagements", "points": points, "assign": found.assign,
                       "centroids": centroids, "active": found.active})
    return {"request": request, "clusters": clusters[chosen], "panels": panels}


# -- HTML -------------------------------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1200px;
       color: #222; line-height: 1.4; }
h1 { font-size: 24px; } h2 { font-size: 19px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
img { max-width: 100%; display: block; margin: 8px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 7px; vertical-align: top; text-align: left; }
th { background: #f4f4f4; }
.note { color: #555; font-size: 13px; }
.side { display: flex; gap: 18px; align-items: flex-start; } .side > div { flex: 1; min-width: 0; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 5px; }
.topics { color: #666; } .hit { background: #fff3b0; font-weight: bold; }
ul.items { margin: 0; padding-left: 16px; }
"""


def _e(text) -> str:
    return html.escape(str(text))


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _items(items: list[dict], target: str | None = None, limit: int = 15) -> str:
    if not items:
        return "<span class='note'>none</span>"
    lines = []
    for item in items[:limit]:
        score = f" <span class='note'>{item['score']:.3f}</span>" if "score" in item else ""
        cls = " class='hit'" if item["item"] == target else ""
        lines.append(f"<li{cls}>{_e(item['item'])} <span class='topics'>{_e(', '.join(item['topics']) or '-')}"
                     f"</span>{score}</li>")
    if len(items) > limit:
        lines.append(f"<li class='note'>and {len(items) - limit} more</li>")
    return "<ul class='items'>" + "".join(lines) + "</ul>"


def _run_table(run: dict) -> str:
    rows = []
    for name, model in run["models"].items():
        s = model["summary"]
        best = s.get("best_validation")
        rows.append(f"<tr><td>{_e(name)}</td><td>{_e(model['kind'])}</td><td>{_e(s.get('optimizer_steps', '-'))}</td>"
                    f"<td>{_e(s.get('monitor', '-'))} = {best if best is None else f'{best:.4f}'}</td>"
                    f"<td>{_e(s.get('best_epoch', '-'))}</td><td>{_e(s.get('seconds', '-'))}</td></tr>")
    out = ("<table><tr><th>model</th><th>kind</th><th>optimizer steps</th><th>best validation</th>"
           "<th>best epoch</th><th>training seconds</th></tr>" + "".join(rows) + "</table>")
    demo = run["demo"]
    if demo and demo.get("stage_seconds"):
        cells = "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in demo["stage_seconds"].items())
        out += (f"<p class='note'>demo stages ({demo.get('seconds', '?')} s in all):</p>"
                f"<table><tr><th>stage</th><th>seconds</th></tr>{cells}</table>")
    return out


def _hr_table(rows: dict[str, dict], demo: dict | None) -> str:
    ks = sorted({k for block in rows.values() for k in block}, key=int)
    head = "".join(f"<th>HR@{k}</th>" for k in ks)
    body = ""
    for label, block in rows.items():
        cells = "".join(f"<td>{block[k]['mean']:.4f} [{block[k]['ci95'][0]:.4f}, {block[k]['ci95'][1]:.4f}]</td>"
                        if k in block else "<td>-</td>" for k in ks)
        body += f"<tr><td>{_e(label)}</td>{cells}</tr>"
    out = f"<table><tr><th></th>{head}</tr>{body}</table>"
    served = (demo or {}).get("served_hr")
    if served:
        names = sorted({k for row in served.values() for k in row if k.startswith("hr@")}, key=lambda k: int(k[3:]))
        body = "".join(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{row[k]:.4f}</td>" for k in names)
                       + f"<td>{row.get('records', '-')}</td></tr>" for name, row in served.items())
        out += ("<p class='note'>Served through the running retrieval service by <code>mer demo</code> "
                "(budget 100, de-duplicated merged list; no interval: few records):</p>"
                f"<table><tr><th></th>{''.join(f'<th>{_e(k.upper())}</th>' for k in names)}<th>records</th></tr>"
                f"{body}</table>")
    return out


def _case_html(case: dict, request: dict) -> str:
    from mer.report_plots import colour

    target = case["target"]
    left = ["<table><tr><th>interest (importance)</th><th>history items in it</th>"
            "<th>top items of its embedding</th></tr>"]
    for row in case["implicit"]:
        k = row["interest"]
        left.append(f"<tr><td><span class='swatch' style='background:{colour(k)}'></span>interest {k} "
                    f"({row['importance']:.1f})</td><td>{_items(row['history'])}</td>"
                    f"<td>{_items(row['retrieved'], target)}</td></tr>")
    if case["unrouted"]:
        left.append(f"<tr><td>not routed (invalid / negative)</td><td>{_items(case['unrouted'])}</td><td></td></tr>")
    left.append("</table>")
    if case["explicit"]:
        right = ["<table><tr><th>followed topic</th><th>top items of its embedding</th></tr>"]
        right += [f"<tr><td>{_e(row['topic'])}</td><td>{_items(row['retrieved'], target)}</td></tr>"
                  for row in case["explicit"]]
        right.append("</table>")
    else:
        right = ["<p class='note'>This user follows no topic: the explicit (CR) retriever has no query.</p>"]
    return (f"<p>User <b>{_e(request['user'])}</b>: {len(request['history'])} engagements; follows "
            f"{_e(', '.join(request['topics']) or 'nothing')}; next engagement (eval target) "
            f"<span class='hit'>{_e(target)}</span>, highlighted where retrieved.</p>"
            "<div class='side'><div><h3>Implicit (DCM): one embedding per interest</h3>" + "".join(left) +
            "</div><div><h3>Explicit (CR): one embedding per followed topic</h3>" + "".join(right) + "</div></div>")


def heatmap_rows(case: dict, max_topics: int = 28) -> tuple[list, list[str]]:
    """Rows and columns of the case study's topic heatmap."""
    from mer.report_case import topic_shares

    rows = [("history (all)", case["history_topics"])]
    for row in case["implicit"]:
        k = row["interest"]
        rows.append((f"interest {k}: history", topic_shares([i["topics"] for i in row["history"]])))
        rows.append((f"interest {k}: retrieved", topic_shares([i["topics"] for i in row["retrieved"]])))
    rows += [(f"explicit '{row['topic']}': retrieved", topic_shares([i["topics"] for i in row["retrieved"]]))
             for row in case["explicit"]]
    weight: dict[str, float] = {}
    for _, shares in rows:
        for topic, share in shares.items():
            weight[topic] = weight.get(topic, 0.0) + share
    topics = sorted(weight, key=lambda t: (-case["history_topics"].get(t, 0.0), -weight[t], t))[:max_topics]
    return rows, topics


def build_report(run_dir: str, out: str | None = None, user: str | None = None, top: int = 8) -> str:
    """Writes the report of `run_dir`; returns its path.

    Raises:
      NotARunDir: `run_dir` lacks a part (named).
    """
    from mer import report_plots as plots

    started = time.time()
    run = inspect_run(run_dir)
    out = out or os.path.join(run_dir, "report.html")
    log.info("run %s: models %s", run_dir, ", ".join(f"{n} ({m['kind']})" for n, m in run["models"].items()))
    sections = [f"<h1>mer run report</h1><p class='note'>run directory <code>{_e(os.path.abspath(run_dir))}"
                "</code></p><h2>Run</h2>" + _run_table(run)]

    log.info("training curves")
    histories = {n: m["summary"].get("history", {}) for n, m in run["models"].items() if m["summary"].get("history")}
    sections.append("<h2>Training curves</h2><p class='note'>Per epoch, from each model's training.json "
                    "(validation HR on the held-out validation records; routing diagnostics for interest "
                    "models).</p>" + _img(plots.training_curves(histories), "training curves"))

    log.info("HR@K")
    evaluations = _evaluations(run)
    rows = hit_rate_rows(evaluations)
    section = "<h2>HR@K per model</h2>"
    if rows:
        section += ("<p class='note'>SPEC §6 exact HR@K on the eval split, 95% bootstrap intervals "
                    "(<code>mer evaluate</code>).</p>" + _img(plots.hit_rates(rows), "HR@K per model")
                    + _hr_table(rows, run["demo"]))
    unevaluated = [n for n in run["models"] if n not in evaluations]
    if unevaluated:
        section += (f"<p class='note'>Not evaluated (no evaluation.json): {_e(', '.join(unevaluated))}. "
                    "Run <code>mer evaluate --model_dir DIR</code> to add them.</p>")
    sections.append(section)

    log.info("Figure 5: interests of one user")
    figure = figure_data(run, user)
    section = ("<h2>One user's interests in 2-D (paper Figure 5)</h2><p class='note'>The history items in the "
               "routing space of the interest module (S&nbsp;e<sub>i</sub>), projected on their first two "
               "principal components; colour = the interest the routing assigns the item to (the largest "
               "routing weight, for MIND's soft assignment); star = that interest's centroid (capsule "
               "direction, drawn at its members' mean norm).</p>"
               + _img(plots.clusters_2d(figure["panels"]), "clusters of one user's history"))
    if not run["mind"]:
        section += ("<p class='note'>No MIND model in this run (<code>mer demo</code> trains DCM and CR only), "
                    "so there is no MIND panel to compare with. Train one into the run directory "
                    "(<code>mer train --set model.kind=mind</code> with <code>--model_dir RUN_DIR/mind</code>) "
                    "and re-run <code>mer report</code> to see its clusters beside DCM's.</p>")
    sections.append(section)

    log.info("Figure 6: case study through the exported towers and indexes")
    from mer.report_case import Towers, case_study
    from trainer.config import load_config

    towers = Towers(run["export"])
    cr_cfg = load_config(os.path.join(run["models"][run["explicit"]]["dir"], "config.yaml"))
    case = case_study(towers, figure["request"], figure["clusters"], cr_cfg.model.num_explicit, top)
    heat_rows, heat_topics = heatmap_rows(case)
    sections.append("<h2>Case study (paper Figure 6)</h2><p class='note'>The history grouped by the interest "
                    f"DCM assigns each item to, and the top {top} items each user embedding retrieves from the "
                    "exported SavedModels and ScaNN indexes (history excluded; an explicit embedding keeps the "
                    "items carrying its topic, as served).</p>"
                    + _img(plots.topic_heatmap(heat_rows, heat_topics), "topics of history and retrieved items")
                    + _case_html(case, figure["request"]))

    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mer report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(sections) + "</body></html>\n")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as handle:
        handle.write(page)
    os.replace(out + ".tmp", out)
    log.info("report written to %s (%.0f KB) in %.0f s", out, os.path.getsize(out) / 1024, time.time() - started)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mer report", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a `mer demo --run_dir` output")
    p.add_argument("--out", default=None, help="HTML path; default RUN_DIR/report.html")
    p.add_argument("--user", default=None, help="case-study user id (default: a user with several interests)")
    p.add_argument("--top", type=int, default=8, help="retrieved items shown per user embedding")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    from common.logs import setup_logging

    setup_logging(args.verbose)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("mer report: error: matplotlib is not installed; pip install 'mer[report]'", file=sys.stderr)
        return 2
    try:
        path = build_report(args.run_dir, args.out, args.user, args.top)
    except (NotARunDir, FileNotFoundError, ValueError) as err:
        print(f"mer report: error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
