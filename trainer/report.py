"""The short evaluation report shipped beside the model (markdown + confusion-matrix PNG)."""

from __future__ import annotations

import shutil
from pathlib import Path

from edge.inference.classifier import card_path_for, load_card

from .samplerule import markdown_lines


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def cell_test_lines(t) -> list:
    """The clinical reviewer's tests (trainer/robustness.py) as markdown."""
    if not t:
        return []
    po, sw = t["painted_out"], t["cell_swap"]
    out = [
        "",
        "## Does the answer follow the white cell? (validation, through the device's code)",
        "",
        "| test | result |",
        "|---|---|",
        f"| cells painted out: refused or flagged | {_pct(po['refused_or_flagged'])} "
        f"(refused {_pct(po['refused'])}, called malignant with confidence {_pct(po['confident_malignant'])}) |",
        f"| cell swap: answer follows the cell / the slide | {_pct(sw['follows_cell'])} / "
        f"{_pct(sw['follows_slide'])} (refused {_pct(sw['refused'])}) |",
    ]
    for lab, r in t["reinhard"].items():
        # Cards before 3.3 counted flips only; newer ones say how many recoloured fields were refused.
        extra = f" ({_pct(r['confident_verdict_flips'])} confidently)" if "confident_verdict_flips" in r else ""
        if "refused" in r:
            extra += f"; refused {_pct(r['refused'])}"
        out.append(
            f"| Reinhard onto {lab} statistics: label / verdict flips | {_pct(r['label_flips'])} / "
            f"{_pct(r['verdict_flips'])}{extra} |"
        )
    out += [
        "",
        "Capture changes, with the config's default gate (the card's `quality_gate` below refuses more; its "
        "curves are in the card under cell_tests.quality_gate):",
        "",
        "| capture change | refused | sensitivity among classified | specificity | confident misses |",
        "|---|---|---|---|---|",
    ]
    for name, curve in t["curves"].items():
        for lv, c in curve.items():
            out.append(
                f"| {name} {lv} | {_pct(c['refused'])} | {_pct(c['sensitivity_among_classified'])} | "
                f"{_pct(c['specificity_among_classified'])} | {c['confident_misses']} |"
            )
    out += [
        "",
        "| out-of-distribution set | n | refused | refused or flagged | called malignant with confidence |",
        "|---|---|---|---|---|",
    ]
    for name, r in t["ood"].items():
        out.append(
            f"| {name} | {r['n']} | {_pct(r['refused'])} | {_pct(r.get('refused_or_flagged', r['refused']))} "
            f"| {r['confident_malignant']} |"
        )
    g = t.get("quality_gate")
    if g:
        out += [
            "",
            "Quality gate from the failure curves (see trainer/gate.py): "
            + "; ".join(
                f"{k} {g[k]['threshold']} (clean fields refused {_pct(g[k]['clean_refused'])}, "
                f"goal {'met' if g[k]['goal_met'] else 'NOT met'})"
                for k in ("min_focus", "min_brightness", "max_brightness")
            )
            + ".",
        ]
    return out


def monitored_lines(t) -> list:
    """The cell tests judged with the domain monitor (trainer/monitored.py) as markdown: the model's confident
    errors beside the device's (those no flag sends to a person)."""
    if not t:
        return []
    out = [
        "",
        "## The same tests with the domain monitor (what reaches a clinic without review)",
        "",
        "| test | refused | sensitivity among answered | answered fields the monitor flags | confident misses: "
        "model / device | confident false alarms: model / device | confident verdict flips: model / device |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [("untouched", t["plain"])]
    rows += [(f"Reinhard onto {lab}", r) for lab, r in t["reinhard"].items()]
    rows += [(f"exposure ×{g}", r) for g, r in t["exposure_gain"].items()]
    rows += [(f"tint {name}", r) for name, r in t["tint"].items()]
    # Blasts shown as another laboratory would show them (its stain; its stain and magnification).
    for src, tests in (t.get("other_lab_stain") or {}).items():
        rows += [(f"{src}'s {name.replace('_x', ', magnification ×')}", r) for name, r in tests.items()]
    for name, r in rows:
        flips = (
            f"{_pct(r['confident_verdict_flips'])} / {_pct(r['device_confident_verdict_flips'])}"
            if "verdict_flips" in r
            else ""
        )
        out.append(
            f"| {name} | {_pct(r['refused'])} | {_pct(r['sensitivity_among_classified'])} | "
            f"{_pct(r['flagged_by_monitor'])} | {r['confident_misses']} / "
            f"{r['device_confident_misses']} | {r['confident_false_alarms']} / {r['device_confident_false_alarms']} "
            f"| {flips} |"
        )
    po = t["painted_out"]
    out.append(
        f"| cells painted out: called malignant with confidence, model / device | {_pct(po['refused'])} | | | | "
        f"{po['confident_malignant']} / {po['device_confident_malignant']} | |"
    )
    return out


def source_lines(e: dict) -> list:
    """Other laboratories: per-source figures, the optics tests, the validated range and the OOD AUROC."""
    out = []
    opt = (e.get("cell_tests") or {}).get("optics")
    if opt:
        out += [
            "",
            "## Another microscope, simulated on the validation fields (through the device's code)",
            "",
            "| change | refused | sensitivity among classified | label / verdict agreement with x1 | "
            "confident misses |",
            "|---|---|---|---|---|",
        ]
        for name, d in opt.items():
            out.append(
                f"| {name} | {_pct(d['refused'])} | {_pct(d['sensitivity_among_classified'])} | "
                f"{_pct(d['label_agreement_with_x1'])} / {_pct(d['verdict_agreement_with_x1'])} | "
                f"{d['confident_misses']} |"
            )
    ps = e.get("per_source")
    if ps:
        out += [
            "",
            "## Per source, through the daemon's pipeline (held-out parts)",
            "",
            "| source | fields | refused | malignant | confidently malignant | flagged (malignant or review) | "
            "outside the validated range | 10-field samples: malignant / benign / to review |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for src, d in ps.items():
            smp = d.get("samples") or {}
            out.append(
                f"| {src} | {d['fields']} | {_pct(d['refused'])} | {_pct(d['malignant'])} | "
                f"{_pct(d['confidently_malignant'])} | {_pct(d['flagged'])} | "
                f"{_pct(d['outside_validated_range'])} | {smp.get('malignant', '-')} / {smp.get('benign', '-')} "
                f"/ {smp.get('needs_review', '-')} |"
            )
    vr = e.get("validated_range")
    if vr:
        out += [
            "",
            f"## Validated range (the domain monitor, edge/pipeline/domain.py): {vr['rule']}; sources "
            f"{', '.join(vr['sources'])}, {vr['fields']} fields",
            "",
            "| statistic | low | high |",
            "|---|---|---|",
        ]
        out += [f"| {k} | {lo} | {hi} |" for k, (lo, hi) in vr["ranges"].items()]
    auroc = e.get("ood_auroc")
    if auroc:
        out += [
            "",
            "Embedding-distance AUROC, primary validation cells vs each other source's held-out cells: "
            + ", ".join(f"{k} {v}" for k, v in auroc.items() if k != "note")
            + f" ({auroc.get('note', '')}).",
        ]
    nv = e.get("novelty")
    if nv:
        out += [
            "",
            f"Novelty (edge/inference/novelty.py): {nv['method']}. AUROC, primary validation cells vs each "
            "other source's held-out cells: "
            + ", ".join(f"{k} {v}" for k, v in (e.get("novelty_auroc") or {}).items())
            + ".",
        ]
    gc = e.get("granulocyte_check")
    if gc and gc.get("held_out_fields_flagged"):
        out += [
            "",
            "## Cells like an immature granulocyte (edge/inference/granulocyte.py): sent to review",
            "",
            f"{gc['method']}; threshold {gc['threshold']}, training cells {gc['train_cells']}. AUROC on held-out "
            "cells: " + ", ".join(f"{k} {v}" for k, v in gc.get("auroc_held_out", {}).items()) + ".",
            "",
            "| held-out fields | flagged |",
            "|---|---|",
        ]
        for part, shares in gc["held_out_fields_flagged"].items():
            out += [f"| {part}: {k} | {_pct(v)} |" for k, v in shares.items()]
    loso = e.get("leave_one_source_out")
    if loso:
        out += ["", "## Leave one source out", "", loso.get("summary", "")]
    return out


def write_report(tflite: Path, work_dir: Path) -> Path:
    card = load_card(card_path_for(tflite))
    e = card.extra
    stem = tflite.with_suffix("")
    png = Path(f"{stem}-confusion.png")
    if (work_dir / "confusion.png").exists():
        shutil.copyfile(work_dir / "confusion.png", png)
    m = e["validation"]["metrics"]
    lines = [
        f"# {card.name} {card.version} — evaluation report",
        "",
        f"{e['description']}",
        "",
        f"- File: `{tflite.name}`, {e['size_bytes'] / 1e6:.2f} MB, sha256 `{card.sha256}`",
        f"- Input mode: **{card.input_mode}** (see the ablation below); preprocessing `{card.preprocessing.version}`"
        + (
            f"; each cell crop scored in {card.cell_views} orientations, their geometric mean (`cell_views`)"
            if card.input_mode == "cell" and card.cell_views > 1
            else ""
        ),
        f"- Created {e['created']}; training + conversion took {e['training']['seconds_total_build'] / 60:.1f} min "
        "on the 2-core build machine",
        f"- Split: {e['split']['method']}; train {sum(e['split']['train'].values())}, "
        f"validation {sum(e['split']['validation'].values())} images; data sha256 `{e['split']['data_sha256'][:16]}…`",
        *lineage_lines(e.get("lineage")),
        "",
        "## Validation (int8 model, held-out slide blocks)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| 4-class accuracy | {_pct(m['accuracy'])} |",
        f"| macro F1 | {m['macro_f1']:.4f} |",
        f"| malignant sensitivity at threshold {card.threshold} | {_pct(m['malignant_sensitivity'])} |",
        f"| specificity at threshold {card.threshold} | {_pct(m['specificity'])} |",
        f"| expected calibration error | {m['ece']:.4f} |",
        f"| float vs int8 top-1 agreement | {_pct(e['float_int8_top1_agreement'])} |",
        f"| review band (malignant score) | {card.review_band[0]:.4f} – {card.review_band[1]:.4f} |",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for lab, c in m["per_class"].items():
        lines.append(f"| {lab} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
    lines += ["", f"![confusion matrix]({png.name})"]
    if e["validation"]["robustness"]:
        lines += [
            "",
            "## Robustness re-runs (validation)",
            "",
            "| variant | accuracy | drop (points) | sensitivity | specificity |",
            "|---|---|---|---|---|",
        ]
    for name, r in e["validation"]["robustness"].items():
        lines.append(
            f"| {name} | {_pct(r['accuracy'])} | {r['accuracy_drop_points']} | "
            f"{_pct(r['malignant_sensitivity'])} | {_pct(r['specificity'])} |"
        )
    lines += [""] + markdown_lines(e.get("sample_rule")) if e.get("sample_rule") else []
    lines += cell_test_lines(e.get("cell_tests"))
    lines += monitored_lines(e.get("cell_tests_with_monitor"))
    lines += source_lines(e)
    if e.get("backend_parity"):
        lines += [
            "",
            "## Backends (validation fields, scripts/backend_parity.py)",
            "",
            "| comparison | verdict agreement | label agreement | refusal agreement | max score difference |",
            "|---|---|---|---|---|",
        ]
        for name, r in e["backend_parity"].items():
            lines.append(
                f"| {name} | {_pct(r['verdict_agreement'])} | {_pct(r['label_agreement'])} | "
                f"{_pct(r['refusal_agreement'])} | {r['max_score_difference']} |"
            )
    lines += [
        "",
        "## Ablation: input mode (same split, same schedule)",
        "",
        "| mode | val accuracy (float) | val macro F1 | fields without a cell | epochs | train time |",
        "|---|---|---|---|---|---|",
    ]
    for mode, a in e["ablation"]["modes"].items():
        mark = " (shipped)" if mode == e["ablation"]["shipped"] else ""
        lines.append(
            f"| {mode}{mark} | {_pct(a['val_accuracy'])} | {a['val_macro_f1']:.4f} | "
            f"{a.get('val_fields_without_cell', 0)} | {a['epochs']} | {a['train_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        f"Rule: {e['ablation']['rule']}.",
        "",
        "## Limits",
        "",
        "- Validation uses whole slide blocks held out by file number, but the public dataset has no "
        "patient IDs, so blocks from one patient may still sit on both sides; expect somewhat lower "
        "figures on new patients and other microscopes.",
        "- The scale-bar label in the bottom-right corner is painted over by the preprocessing before the "
        "model sees anything.",
        "- In this dataset each class comes from its own slides; the tests above measure how far the "
        "answer rests on the cell, but only another laboratory's slides can show how it transfers.",
        "- Sensitivity is validated on one hospital's Wright-Giemsa stained smears only (the other sources "
        "hold no blasts); the domain monitor sends fields outside that range to review, and a clinic must "
        "validate on its own slides (`edge-screen-train evaluate MODEL --external FOLDER`) before relying "
        "on it.",
        "",
    ]
    out = Path(f"{stem}.md")
    out.write_text("\n".join(lines))
    return out


def lineage_lines(lineage) -> list:
    """The card's lineage (a model retrained with corrections) as a bullet, so the report says what it is."""
    if not lineage:
        return []
    base = lineage.get("base") or {}
    line = f"- Lineage: {lineage.get('summary') or lineage.get('kind')}"
    if base.get("name"):
        line += f"; base {base['name']} {base.get('version', '?')} (sha256 `{str(base.get('sha256', ''))[:12]}…`)"
    c = lineage.get("corrections") or {}
    if c.get("sha256"):
        line += f"; corrections sha256 `{c['sha256'][:12]}…`"
    return [line]
