-- A journal as the station wrote it before adapters had stores (schema version 5).
PRAGMA user_version = 5;
CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
CREATE TABLE auth_cache (
        id_tag TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        expiry_date TEXT,
        parent_id_tag TEXT,
        updated_at REAL NOT NULL
    );
CREATE TABLE bay_state (
        bay_id TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
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
CREATE TABLE charging_profiles (
        id INTEGER PRIMARY KEY,
        connector INTEGER NOT NULL,
        stack_level INTEGER NOT NULL,
        purpose TEXT NOT NULL,
        transaction_id INTEGER,
        profile TEXT NOT NULL,
        installed_at REAL NOT NULL
    );
CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        bay_id TEXT,
        session_id TEXT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
CREATE TABLE holds (
        id TEXT PRIMARY KEY,
        bay_id TEXT NOT NULL,
        token TEXT NOT NULL,
        reservation_id INTEGER,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        state TEXT NOT NULL
    );
CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
CREATE TABLE local_auth_list (
        id_tag TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        expiry_date TEXT,
        parent_id_tag TEXT
    );
CREATE TABLE meter_samples (
        at REAL NOT NULL,
        source TEXT NOT NULL,
        session_id TEXT,
        energy_wh REAL,
        power_w REAL,
        current_a TEXT
    );
CREATE TABLE nonces (
        nonce TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
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
    , plug_count INTEGER, node_boot_id INTEGER);
CREATE TABLE ui_sessions (
        id_hash TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
CREATE TABLE ui_users (
        username TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('owner', 'installer', 'viewer')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
CREATE INDEX events_session ON events(session_id);
CREATE INDEX events_at ON events(at);
CREATE INDEX sessions_bay ON sessions(bay_id, started_at);
CREATE INDEX sessions_started ON sessions(started_at);
CREATE UNIQUE INDEX sessions_one_open_per_bay ON sessions(bay_id) WHERE state = 'open';
CREATE INDEX outbox_pending ON outbox(state, id);
CREATE INDEX meter_samples_source ON meter_samples(source, at);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX bookings_due ON bookings(state, start_at);
DELETE FROM "sqlite_sequence";
