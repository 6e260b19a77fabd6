"""The edge-screen database: its tables and version (migrations: :mod:`edge.store.migrations`; engines:
:mod:`edge.store.engine`).

Every row carries a UUID text primary key and the id of the device that produced it, so databases from
many microscopes merge without renumbering. Times are stored as UTC. JSON values are stored as text with
sorted keys, so equal content is equal text on every backend (merge compares rows to find conflicts).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from edge.vocabulary import STAGES, SampleStatus

APPLICATION = "edge-screen"
SCHEMA_VERSION = 7


class SchemaError(RuntimeError):
    """The database cannot be used by this code; ``str(err)`` is one line."""


class DriverMissing(SchemaError):
    """The URL names a database whose Python driver is not installed."""


class NotEdgeScreenDatabase(SchemaError):
    pass


class SchemaTooNew(SchemaError):
    pass


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out. SQLite keeps no zone, so naive values are refused
    on the way in (a local-time stamp would silently shift by the device's offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


metadata = MetaData()
UUID = String(36)
DEVICE = String(64)
SHA = String(64)

schema_info = Table(
    "schema_info",
    metadata,
    Column("application", String(32), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", UUID, primary_key=True),
    Column("device_id", DEVICE, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime),
    Column("exit_reason", Text),
    Column("version", String(32)),
    Column("pid", Integer),
    Column("hostname", String(255)),
)

models = Table(
    "models",
    metadata,
    Column("id", UUID, primary_key=True),
    Column("device_id", DEVICE, nullable=False),
    Column("name", String(255), nullable=False),
    Column("sha256", SHA, nullable=False),
    Column("card", Text),
    Column("first_seen", UTCDateTime, nullable=False),
    UniqueConstraint("device_id", "sha256", name="uq_models_device_sha256"),
)

images = Table(
    "images",
    metadata,
    Column("id", UUID, primary_key=True),
    Column("device_id", DEVICE, nullable=False),
    Column("run_id", UUID, ForeignKey("runs.id")),  # NULL for `classify` outside a daemon run
    Column("model_id", UUID, ForeignKey("models.id")),
    Column("path", Text, nullable=False),
    Column("filename", Text, nullable=False),
    Column("sha256", SHA, nullable=False),
    Column("bytes", BigInteger),
    Column("capture_time", UTCDateTime),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("label", String(64)),
    Column("probabilities", Text),
    Column("malignant_score", Float),
    Column("verdict", String(16)),
    Column("needs_review", Boolean, nullable=False, default=False),
    Column("duplicate_of", UUID, ForeignKey("images.id")),
    Column("quality", Text),
    Column("segmentation", Text),
    *(Column(f"t_{s}_ms", Float) for s in STAGES),
    Column("model_name", String(255)),
    Column("model_sha256", SHA),
    # v3: where `daemon.after = "move"` put the file, and the sample (patient smear) the field belongs to.
    Column("moved_to", Text),
    Column("sample_id", String(64)),
    Column("purged_at", UTCDateTime),  # when retention deleted the file (exported rows only; the row stays)
    # v4: the field's optics as measured (edge/imaging/optics.py) and, when it lies outside the model card's
    # validated range, why in plain words (edge/pipeline/domain.py); NULL inside it.
    Column("px_per_um", Float),
    Column("magnification", Float),
    Column("domain", Text),
    # The statuses spelled out, not built from vocabulary.Status: this is the DDL databases in the field were
    # created with, and a new status needs a migration that changes it (tests/test_layout.py checks they agree).
    CheckConstraint("status IN ('classified', 'unreadable', 'rejected', 'duplicate')", name="ck_images_status"),
    CheckConstraint("verdict IS NULL OR verdict IN ('benign', 'malignant')", name="ck_images_verdict"),
    # Exactly-once: the same inbox file with the same content can be recorded only once per device, so
    # a daemon killed between commit and bookkeeping cannot record it again after a restart.
    UniqueConstraint("device_id", "path", "sha256", name="uq_images_device_path_sha256"),
)
Index("ix_images_device_recorded", images.c.device_id, images.c.recorded_at)
Index("ix_images_sha256", images.c.sha256)
Index("ix_images_path", images.c.path)
Index("ix_images_status", images.c.status)
Index("ix_images_sample", images.c.device_id, images.c.sample_id)

# v3: one patient smear = one inbox subfolder. Its aggregate is recomputed from its fields on every change
# (the fields are the truth); status moves collecting -> ready -> signed and never back.
samples = Table(
    "samples",
    metadata,
    Column("id", UUID, primary_key=True),
    Column("device_id", DEVICE, nullable=False),
    Column("sample_id", String(64), nullable=False),  # the subfolder name, validated (edge.store.samples)
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),  # last change of any kind (export picks it up)
    Column("last_field_at", UTCDateTime),  # when its newest field was recorded (the ready rule's clock)
    Column("fields", Integer, nullable=False, default=0),
    Column("readable", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False, default=SampleStatus.COLLECTING),
    Column("verdict", String(16)),
    Column("score", Float),
    Column("needs_review", Boolean, nullable=False, default=False),
    Column("review_reasons", Text),  # JSON list of one-line reasons
    Column("rule", Text),  # JSON: the card's sample rule that produced verdict/score
    Column("model_id", UUID, ForeignKey("models.id")),
    Column("model_sha256", SHA),
    Column("ready_at", UTCDateTime),
    Column("closed_by", String(32)),  # "rule" or "manual"
    Column("signed_at", UTCDateTime),
    Column("signed_by", String(64)),
    Column("final_verdict", String(16)),
    Column("final_label", String(64)),
    # v5: who the smear is from, as the laboratory knows it (edge/store/samplemeta.py): optional, validated
    # identifiers from the sample folder's sample.json or `edge-screen sample meta`; FHIR subject/specimen.
    Column("patient_id", String(64)),
    Column("specimen_id", String(64)),
    Column("meta_source", String(64)),  # where they came from: "sample.json" or "cli"
    Column("meta_error", Text),  # why the sample folder's sample.json was not used (one line); NULL when it was
    # v6: fields recorded after the sign-off (not part of what was signed; the page flags them). The
    # signed sample's fields/readable/verdict stay as they were signed.
    Column("late_fields", Integer),
    # Spelled out like ck_images_status, not built from vocabulary.SampleStatus (tests/test_layout.py checks).
    CheckConstraint("status IN ('collecting', 'ready', 'signed')", name="ck_samples_status"),
    CheckConstraint("verdict IS NULL OR verdict IN ('benign', 'malignant')", name="ck_samples_verdict"),
    UniqueConstraint("device_id", "sample_id", name="uq_samples_device_sample"),
)

# v3: append-only. A review never changes what the model said (that stays in images/samples); it records
# what a person said about one field or one whole sample, and a sign-off is a sample review with
# kind = 'signoff'.
reviews = Table(
    "reviews",
    metadata,
    Column("id", UUID, primary_key=True),
    Column("device_id", DEVICE, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("reviewer", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # field | sample | signoff
    Column("sample_id", String(64), nullable=False),
    Column("image_id", UUID, ForeignKey("images.id")),  # NULL for sample reviews and sign-offs
    Column("model_label", String(64)),
    Column("model_score", Float),
    Column("model_sha256", SHA),
    Column("reviewer_label", String(64)),
    Column("reviewer_verdict", String(16)),
    Column("comment", Text),
    CheckConstraint("kind IN ('field', 'sample', 'signoff')", name="ck_reviews_kind"),
    CheckConstraint(
        "reviewer_verdict IS NULL OR reviewer_verdict IN ('benign', 'malignant')", name="ck_reviews_verdict"
    ),
)
Index("ix_reviews_sample", reviews.c.device_id, reviews.c.sample_id)
Index("ix_reviews_image", reviews.c.image_id)

# v3: the review app's accounts and sessions. Device-local: never exported.
users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    CheckConstraint("role IN ('viewer', 'reviewer', 'admin')", name="ck_users_role"),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_sha256", SHA, primary_key=True),  # the cookie holds the token; a stolen DB holds no cookie
    Column("user_name", String(64), ForeignKey("users.name"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# v7: failed log-ins per user name and per client (edge.store.throttle): in the database, not in the server's
# memory, so `edge-screen user enable` (another process) can lift a lock and a restart does not.
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(160), primary_key=True),  # "user:<casefolded name>" or "client:<address>"
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UTCDateTime, nullable=False),
    Column("retry_at", UTCDateTime),  # no attempt is checked before this (slowed down or locked)
)

# v7: append-only audit of account changes (added, disabled, enabled, password changed, locked by failed
# log-ins; `user enable` lifting a lock is an "enable" with that detail).
user_events = Table(
    "user_events",
    metadata,
    Column("id", UUID, primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("user_name", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("actor", String(128), nullable=False),  # who did it: "os:<login>" for the CLI
    Column("detail", Text),
    CheckConstraint("action IN ('add', 'disable', 'enable', 'passwd', 'lock')", name="ck_user_events_action"),
)
Index("ix_user_events_user", user_events.c.user_name)

export_watermarks = Table(
    "export_watermarks",
    metadata,
    Column("target", Text, primary_key=True),  # normalised URL or absolute path, without password
    Column("device_id", DEVICE, primary_key=True),
    Column("last_recorded_at", UTCDateTime),
    Column("last_id", UUID),
    # SQLite rowid of last_id in the source. A Pi has no real-time clock and its time can jump back, so
    # recorded_at is not monotonic; insertion order is.
    Column("last_seq", BigInteger),
    Column("exported_at", UTCDateTime, nullable=False),
    Column("rows", BigInteger, nullable=False),
)

DATA_TABLES = ("runs", "models", "images", "export_watermarks", "samples", "reviews")
LOCAL_TABLES = ("users", "web_sessions", "login_throttle", "user_events")  # device-local, never exported
