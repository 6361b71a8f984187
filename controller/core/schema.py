"""The core schema of the journal: its migrations, one entry per schema version.

The core owns the station's tables (events, sessions, holds, bay states, the
outbox, meter samples and per-minute meter figures, kv, audit, nonces, bookings) and the table of store
namespaces (``store_versions``). Adapters own theirs through
:class:`controller.core.store.Store`, each with its own migrations, applied in
the same database when the adapter opens its store.
"""

from __future__ import annotations

# Append, never edit a released entry: a journal's ``PRAGMA user_version`` is the number of
# entries applied to it.
MIGRATIONS: list[str] = [
    # 1: the foundation
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        bay_id TEXT,
        session_id TEXT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_session ON events(session_id);
    CREATE INDEX events_at ON events(at);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        bay_id TEXT NOT NULL,
        connector INTEGER NOT NULL,
        token TEXT NOT NULL,
        auth_source TEXT NOT NULL,
        reservation_id INTEGER,
        mode TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
        started_at REAL NOT NULL,
        stopped_at REAL,
        meter_start_wh INTEGER NOT NULL,
        meter_stop_wh INTEGER,
        meter_wh INTEGER NOT NULL,
        energy_wh INTEGER NOT NULL DEFAULT 0,
        peak_power_w REAL NOT NULL DEFAULT 0,
        avg_power_w REAL,
        tariff TEXT NOT NULL,
        cost REAL,
        currency TEXT,
        stop_reason TEXT,
        quota_wh INTEGER,
        quota_s REAL,
        ocpp_tx_id INTEGER,
        sync_state TEXT NOT NULL DEFAULT 'pending'
    );
    CREATE INDEX sessions_bay ON sessions(bay_id, started_at);
    CREATE INDEX sessions_started ON sessions(started_at);
    CREATE UNIQUE INDEX sessions_one_open_per_bay ON sessions(bay_id) WHERE state = 'open';
    CREATE TABLE holds (
        id TEXT PRIMARY KEY,
        bay_id TEXT NOT NULL,
        token TEXT NOT NULL,
        reservation_id INTEGER,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        state TEXT NOT NULL
    );
    CREATE TABLE bay_state (
        bay_id TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        session_id TEXT,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        done_at REAL,
        response TEXT
    );
    CREATE INDEX outbox_pending ON outbox(state, id);
    CREATE TABLE meter_samples (
        at REAL NOT NULL,
        source TEXT NOT NULL,
        session_id TEXT,
        energy_wh REAL,
        power_w REAL,
        current_a TEXT
    );
    CREATE INDEX meter_samples_source ON meter_samples(source, at);
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_at ON audit(at);
    CREATE TABLE nonces (
        nonce TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    );
    """,
    # 2 (released): created the OCPP adapter's tables. They belong to cloud_sync now, whose
    # first store migration creates them IF NOT EXISTS: a journal migrated before keeps them
    # with their data, a new journal gets them when the OCPP client first opens its store.
    "",
    # 3 (released): created the local UI's tables, in local_ui's store now (same as 2).
    "",
    # 4: the local booking calendar: future holds, placed at their time (also offline)
    """
    CREATE TABLE bookings (
        id TEXT PRIMARY KEY,
        bay_id TEXT NOT NULL,
        token TEXT NOT NULL,
        start_at REAL NOT NULL,
        hold_s REAL NOT NULL,
        reservation_id INTEGER,
        state TEXT NOT NULL CHECK (state IN ('scheduled', 'placed', 'cancelled', 'missed')),
        created_at REAL NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX bookings_due ON bookings(state, start_at);
    """,
    # 5: plug continuity: the node's plug and boot counters when a session began
    """
    ALTER TABLE sessions ADD COLUMN plug_count INTEGER;
    ALTER TABLE sessions ADD COLUMN node_boot_id INTEGER;
    """,
    # 6: the schema version of each adapter's store (controller.core.store)
    """
    CREATE TABLE store_versions (
        namespace TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    );
    """,
    # 7: kind to flash. Live figures stay in memory; the journal keeps one row per node and
    # minute (clustered by minute, so a minute's rows fill the same pages), and a session's
    # energy checkpoint in its own row (``checkpoint_at``: when it was taken). meter_samples
    # stays for the 1 Hz rows of older releases.
    """
    CREATE TABLE meter_minutes (
        minute REAL NOT NULL,
        source TEXT NOT NULL,
        session_id TEXT,
        samples INTEGER NOT NULL,
        energy_wh REAL,
        power_w REAL,
        power_max_w REAL,
        current_a TEXT,
        last_at REAL NOT NULL,
        PRIMARY KEY (minute, source)
    ) WITHOUT ROWID;
    ALTER TABLE sessions ADD COLUMN checkpoint_at REAL
    """,
    # 8: minute rows appended, not balanced. Keyed (minute, source) WITHOUT ROWID, every
    # write overflowed the last leaf of an index b-tree, which SQLite rebalances with its
    # two left siblings and their parent: 3-4 pages more per write on flash. Now a rowid
    # table whose rowid is ``minute / 60 * 2**20 + slot`` (``meter_sources``: one small
    # number per source, given once): rows still in (minute, source) order, and a full last
    # leaf only gets a new one beside it. Minute ranges are rowid ranges.
    """
    CREATE TABLE meter_sources (
        slot INTEGER PRIMARY KEY,
        source TEXT NOT NULL UNIQUE
    );
    INSERT INTO meter_sources(source) SELECT DISTINCT source FROM meter_minutes ORDER BY source;
    CREATE TABLE meter_minutes_8 (
        id INTEGER PRIMARY KEY,
        minute REAL NOT NULL,
        source TEXT NOT NULL,
        session_id TEXT,
        samples INTEGER NOT NULL,
        energy_wh REAL,
        power_w REAL,
        power_max_w REAL,
        current_a TEXT,
        last_at REAL NOT NULL
    );
    INSERT INTO meter_minutes_8(id, minute, source, session_id, samples, energy_wh, power_w,
        power_max_w, current_a, last_at)
        SELECT CAST(m.minute / 60 AS INTEGER) * 1048576 + s.slot, m.minute, m.source,
            m.session_id, m.samples, m.energy_wh, m.power_w, m.power_max_w, m.current_a,
            m.last_at
        FROM meter_minutes AS m JOIN meter_sources AS s ON s.source = m.source
        ORDER BY 1;
    DROP TABLE meter_minutes;
    ALTER TABLE meter_minutes_8 RENAME TO meter_minutes
    """,
]
