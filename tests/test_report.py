"""edge-screen report on a real SQLite store: numbers equal direct SQL, filters, windows, CLI (HTML:
test_report_html.py)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone

import cv2
import pytest
from click.testing import CliRunner
from report_support import REPORT_N as N
from report_support import model_path, report_db, report_record, sql, synthetic_smear, write_png

from edge.cli.report import COMMANDS, explain, report
from edge.report.formats import CSV_COLUMNS, dumps_csv, to_json
from edge.report.query import build_report
from edge.report.window import Filters, ReportError, make_window, parse_when
from edge.store.database import Store

UTC = timezone.utc


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return report_db(tmp_path_factory.mktemp("report"))


def _csv(data):
    rows = list(csv.DictReader(io.StringIO(dumps_csv(data))))
    return rows


def nearest_rank(values, p):
    v = sorted(values)
    return v[max(0, math.ceil(p * len(v)) - 1)]


# ------------------------------------------------------------------------------------------- numbers


def test_csv_numbers_equal_direct_sql(db):
    path = db[0]
    data = build_report(path, make_window(all_time=True))
    rows = _csv(data)
    assert list(rows[0].keys()) == list(CSV_COLUMNS)
    counts = [r for r in rows if r["section"] == "count"]
    by_status = Counter()
    by_day_label, by_device = Counter(), Counter()
    for r in counts:
        by_status[r["status"]] += int(r["count"])
        by_device[r["device_id"]] += int(r["count"])
        if r["status"] == "classified":
            by_day_label[(r["day"], r["label"])] += int(r["count"])
    assert dict(by_status) == dict(sql(path, "SELECT status, COUNT(*) FROM images GROUP BY status"))
    assert dict(by_device) == dict(sql(path, "SELECT device_id, COUNT(*) FROM images GROUP BY device_id"))
    assert dict(by_day_label) == {
        (d, lab): n
        for d, lab, n in sql(
            path, "SELECT date(recorded_at), label, COUNT(*) FROM images WHERE status='classified' GROUP BY 1, 2"
        )
    }
    assert (
        sum(int(r["count"]) for r in counts if r["needs_review"] == "1" and r["status"] == "classified")
        == sql(path, "SELECT COUNT(*) FROM images WHERE status='classified' AND needs_review")[0][0]
    )

    flagged = [r["image_id"] for r in rows if r["section"] == "flagged"]
    expected = {
        i
        for (i,) in sql(
            path, "SELECT id FROM images WHERE status='classified' AND (verdict='malignant' OR needs_review)"
        )
    }
    assert sorted(flagged) == sorted(expected) and len(flagged) == len(expected)
    # Malignant first: a reviewer with little time must see them before the merely uncertain.
    verdicts = [r["verdict"] for r in rows if r["section"] == "flagged"]
    assert verdicts == sorted(verdicts, key=lambda v: v != "malignant")
    problems = {(r["image_id"], r["reason"]) for r in rows if r["section"] == "problem"}
    assert problems == set(sql(path, "SELECT id, reason FROM images WHERE status IN ('unreadable','rejected')"))

    timing = {r["stage"]: r for r in rows if r["section"] == "timing"}
    for stage in ("total", "inference", "decode"):
        vals = [v for (v,) in sql(path, f"SELECT t_{stage}_ms FROM images WHERE t_{stage}_ms IS NOT NULL")]
        t = timing[stage]
        assert int(t["n"]) == len(vals)
        assert float(t["median_ms"]) == nearest_rank(vals, 0.5)
        assert float(t["p95_ms"]) == nearest_rank(vals, 0.95)
        assert float(t["max_ms"]) == max(vals)
    assert int(timing["store"]["n"]) == sql(path, "SELECT COUNT(t_store_ms) FROM images")[0][0]

    models = {r["model_name"]: int(r["count"]) for r in rows if r["section"] == "model"}
    assert models == dict(sql(path, "SELECT model_name, COUNT(*) FROM images GROUP BY model_name"))


def test_json_totals_per_day_and_device_equal_sql(db):
    path = db[0]
    j = json.loads(json.dumps(to_json(build_report(path, make_window(all_time=True)))))
    assert j["schema"] == "edge-screen-report/1"
    assert j["totals"]["images"] == N
    assert j["totals"]["by_verdict"] == dict(
        sql(path, "SELECT verdict, COUNT(*) FROM images WHERE status='classified' GROUP BY verdict")
    )
    assert j["totals"]["by_label"] == dict(
        sql(path, "SELECT label, COUNT(*) FROM images WHERE status='classified' GROUP BY label")
    )
    for day, n in sql(path, "SELECT date(recorded_at), COUNT(*) FROM images GROUP BY 1"):
        assert j["per_day"][day]["images"] == n
    for dev, n in sql(path, "SELECT device_id, COUNT(*) FROM images WHERE verdict='malignant' GROUP BY 1"):
        assert j["per_device"][dev]["malignant"] == n
    assert sum(b["count"] for b in j["total_time_histogram"]) == N
    assert {m["model_name"] for m in j["models"]} == {"model-a", "model-b"}


@pytest.mark.parametrize(
    "filters, where",
    [
        (Filters(verdict="malignant"), "verdict = 'malignant'"),
        (Filters(labels=("Pre-B", "Pro-B")), "label IN ('Pre-B', 'Pro-B')"),
        (Filters(needs_review=True), "needs_review = 1"),
        (Filters(statuses=("unreadable", "rejected")), "status IN ('unreadable', 'rejected')"),
        (Filters(devices=("dev-b",)), "device_id = 'dev-b'"),
        (Filters(devices=("dev-a",), verdict="benign"), "device_id = 'dev-a' AND verdict = 'benign'"),
    ],
)
def test_filters_select_the_same_rows_as_sql(db, filters, where):
    path = db[0]
    data = build_report(path, make_window(all_time=True), filters)
    assert data.total == sql(path, f"SELECT COUNT(*) FROM images WHERE {where}")[0][0] > 0
    expected = {
        i
        for (i,) in sql(
            path,
            f"SELECT id FROM images WHERE {where} AND status='classified' AND (verdict='malignant' OR needs_review)",
        )
    }
    assert {f.image_id for f in data.flagged} == expected


def test_bad_filter_values_are_refused():
    with pytest.raises(ReportError, match="--verdict"):
        Filters(verdict="maybe")
    with pytest.raises(ReportError, match="--status"):
        Filters(statuses=("classified", "lost"))


# -------------------------------------------------------------------------------------------- windows

NOW = datetime(2026, 5, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8h", NOW - timedelta(hours=8)),
        ("30m", NOW - timedelta(minutes=30)),
        ("7d", NOW - timedelta(days=7)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        (" 12H ", NOW - timedelta(hours=12)),
        ("2026-05-01", datetime(2026, 5, 1, tzinfo=UTC)),
        ("2026-05-01T06:30", datetime(2026, 5, 1, 6, 30, tzinfo=UTC)),
        ("2026-05-01T06:30:00Z", datetime(2026, 5, 1, 6, 30, tzinfo=UTC)),
        ("2026-05-01T08:30+02:00", datetime(2026, 5, 1, 6, 30, tzinfo=UTC)),
        ("today", datetime(2026, 5, 3, tzinfo=UTC)),
        ("yesterday", datetime(2026, 5, 2, tzinfo=UTC)),
    ],
)
def test_since_parses_relative_and_absolute_times(text, expected):
    assert parse_when(text, NOW, UTC) == expected


def test_local_time_and_inclusive_until():
    plus2 = timezone(timedelta(hours=2))
    # A technician in UTC+2 typing a date means their midnight, 22:00 UTC the day before.
    assert parse_when("2026-05-02", NOW, plus2) == datetime(2026, 5, 1, 22, tzinfo=UTC)
    w = make_window(since="2026-05-02", until="2026-05-02", now=NOW, tz=UTC)
    assert (w.since, w.until) == (datetime(2026, 5, 2, tzinfo=UTC), datetime(2026, 5, 3, tzinfo=UTC))
    assert make_window(now=NOW, tz=plus2).since == datetime(2026, 5, 2, 22, tzinfo=UTC)
    assert make_window(now=NOW, tz=UTC).until is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(since="yesterdayish"), "--since"),
        (dict(until="5 parsecs"), "--until"),
        (dict(since="2026-05-03", until="2026-05-01"), "not before"),
        (dict(since="8h", all_time=True), "--all"),
    ],
)
def test_bad_windows_are_one_line_errors(kwargs, match):
    with pytest.raises(ReportError, match=match):
        make_window(now=NOW, tz=UTC, **kwargs)


def test_windows_select_the_same_rows_as_sql(db):
    path = db[0]
    one_day = build_report(path, make_window(since="2026-05-02", until="2026-05-02", now=NOW, tz=UTC))
    assert one_day.total == sql(path, "SELECT COUNT(*) FROM images WHERE date(recorded_at) = '2026-05-02'")[0][0]
    assert one_day.days() == ["2026-05-02"]
    now = datetime(2026, 5, 3, 16, 0, tzinfo=UTC)
    recent = build_report(path, make_window(since="5h", now=now, tz=UTC))
    assert recent.total == sql(path, "SELECT COUNT(*) FROM images WHERE recorded_at >= '2026-05-03 11:00:00'")[0][0]
    assert 0 < recent.total < N
    today = build_report(path, make_window(now=now, tz=UTC))
    assert today.total == sql(path, "SELECT COUNT(*) FROM images WHERE recorded_at >= '2026-05-03'")[0][0]


def test_missing_empty_and_foreign_databases_are_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="no database"):
        build_report(tmp_path / "nope.sqlite", make_window(all_time=True))
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER)")
    with pytest.raises(ReportError, match="not an edge-screen database"):
        build_report(foreign, make_window(all_time=True))
    assert not (tmp_path / "nope.sqlite").exists()  # a report never creates a database


# ------------------------------------------------------------------------------------------------ CLI


def test_commands_are_exposed_with_help():
    assert [c.name for c in COMMANDS] == ["report", "explain"]
    for c in COMMANDS:
        r = CliRunner().invoke(c, ["--help"])
        assert r.exit_code == 0 and "Usage" in r.output


def test_report_command_formats(db, tmp_path):
    path = str(db[0])
    r = CliRunner().invoke(report, ["--db", path, "--all", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["totals"]["images"] == N
    r = CliRunner().invoke(
        report,
        [
            "--db",
            path,
            "--since",
            "2026-05-01",
            "--until",
            "2026-05-01",
            "--verdict",
            "malignant",
            "--format",
            "csv",
            "--out",
            str(tmp_path / "r.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert (
        sum(int(x["count"]) for x in rows if x["section"] == "count")
        == sql(db[0], "SELECT COUNT(*) FROM images WHERE verdict='malignant' AND date(recorded_at)='2026-05-01'")[0][0]
    )
    r = CliRunner().invoke(report, ["--db", path, "--all", "--label", "Pro B"])
    assert r.exit_code == 2 and "Pro-B" in r.output and "Early Pre-B" in r.output, r.output
    r = CliRunner().invoke(report, ["--db", path, "--all", "--label", "pro-b", "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.output)["totals"]["images"] > 0, r.output
    r = CliRunner().invoke(report, ["--db", path, "--all", "--needs-review"])
    assert r.exit_code == 0 and "needs review" in r.output
    r = CliRunner().invoke(report, ["--db", path, "--all", "--format", "html", "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and (tmp_path / "r.html").stat().st_size > 1000


def test_report_command_errors_are_one_line(db, tmp_path):
    for args, msg in (
        (["--since", "soon"], "--since"),
        (["--format", "html"], "--out"),
        (["--today", "--all"], "--today"),
        (["--maps", "--format", "csv"], "--maps"),
    ):
        r = CliRunner().invoke(report, ["--db", str(db[0]), *args])
        assert r.exit_code != 0 and msg in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(report, ["--db", str(tmp_path / "none.sqlite"), "--all"])
    assert r.exit_code != 0 and "no database" in r.output


def test_explain_command_writes_png(tmp_path):
    src = write_png(tmp_path / "s.png", synthetic_smear(n_cells=2))
    out = tmp_path / "map.png"
    r = CliRunner().invoke(explain, [str(src), "--out", str(out), "--model", str(model_path()), "--grid", "5"])
    assert r.exit_code == 0, r.output
    assert cv2.imread(str(out)) is not None
    r = CliRunner().invoke(explain, [str(tmp_path / "gone.png"), "--out", str(out), "--model", str(model_path())])
    assert r.exit_code != 0 and "gone.png" in r.output


def test_commands_are_registered_on_the_main_group_and_use_its_config(db, tmp_path):
    main = pytest.importorskip("edge.cli.app", reason="the command line (edge.cli.app) does not import").main
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{db[0]}"\n')
    r = CliRunner().invoke(main, ["--config", str(cfg), "report", "--all", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["totals"]["images"] == N


def test_postgresql_report_equals_the_sqlite_one(db, pg_url, tmp_path):
    """The clinic server's database gives the same report; days stay UTC whatever the session zone."""
    import uuid as _uuid

    import sqlalchemy as sa

    admin = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    name = f"edge_report_{_uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # noqa: BLE001 - an unreachable server is a stated skip outside CI
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at EDGE_SCREEN_TEST_PG is not reachable: {str(e).splitlines()[0]}")
    url = admin.url.set(database=name)
    try:
        with Store.open(url.render_as_string(hide_password=False), device_id="dev-a") as store:
            for i in range(N):
                store.record(report_record(i, db[1]))
        # Far from UTC, so a day computed in the session's zone would move late-evening images.
        engine = sa.create_engine(url, connect_args={"options": "-c timezone=Pacific/Kiritimati"})
        window = make_window(since="2026-05-01T09:00Z", until="2026-05-03", now=NOW, tz=UTC)
        pg, lite = (to_json(build_report(src, window)) for src in (engine, db[0]))
        engine.dispose()
        for key in ("totals", "per_day", "per_device", "timings", "models", "total_time_histogram"):
            assert pg[key] == lite[key], key
        strip = lambda rows: [{k: v for k, v in r.items() if k != "image_id"} for r in rows]  # ids are uuid4
        assert strip(pg["flagged"]) == strip(lite["flagged"]) and pg["flagged"]
        assert strip(pg["problems"]) == strip(lite["problems"]) and pg["problems"]
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_report_table_fits_an_80_column_pi_console(db):
    """Issue 8, 23: each flagged image on one line of at most 80 columns (it wrapped over 7 before)."""
    r = CliRunner().invoke(report, ["--db", str(db[0]), "--all"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    flagged = [line for line in lines if re.match(r"\s*\d\d-\d\dT\d\d:\d\d .* (mal|ben REV)", line)]
    assert len(flagged) >= 5 and all(".jpg" in line or ".png" in line for line in flagged), flagged[:3]
    assert "mal = malignant" in r.output  # the short headings are explained
