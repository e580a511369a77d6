"""Numbered schema migrations, applied in order and tracked by ``PRAGMA user_version``.

Never edit a migration that has shipped: append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: apps, their port slots, and the ledger of published ports.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('revision', 0);

    CREATE TABLE apps (
        name          TEXT PRIMARY KEY,
        image         TEXT NOT NULL,
        command       TEXT NOT NULL,   -- JSON array
        env           TEXT NOT NULL,   -- JSON object
        desired_state TEXT NOT NULL CHECK (desired_state IN ('running', 'stopped')),
        revision      INTEGER NOT NULL,
        create_time   TEXT NOT NULL,
        update_time   TEXT NOT NULL
    );

    CREATE TABLE bindings (
        app                TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
        slot               INTEGER NOT NULL CHECK (slot >= 0),
        protocol           TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')),
        published          INTEGER NOT NULL CHECK (published BETWEEN 1 AND 65535),
        target             INTEGER NOT NULL CHECK (target BETWEEN 1 AND 65535),
        published_explicit INTEGER NOT NULL,
        target_explicit    INTEGER NOT NULL,
        PRIMARY KEY (app, slot)
    );

    -- The ledger: one row per held published port. The primary key makes a
    -- double allocation impossible even if the planner had a bug. During a
    -- rollout an app holds the union of its old and new ports.
    CREATE TABLE published_ports (
        protocol TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')),
        port     INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        app      TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
        PRIMARY KEY (protocol, port)
    ) WITHOUT ROWID;
    CREATE INDEX published_ports_by_app ON published_ports (app);
    """,
    # 2: the port-event log. Each row is written in the transaction whose
    # change it records, under that transaction's server-wide revision.
    # 'events_floor' is the revision up to which the log was compacted: a
    # watch may resume from any revision at or above it. A database that
    # predates the log starts its floor at its current revision.
    """
    CREATE TABLE events (
        revision     INTEGER PRIMARY KEY,
        app          TEXT NOT NULL,
        kind         TEXT NOT NULL,
        old_bindings TEXT NOT NULL,   -- JSON array of slots
        new_bindings TEXT NOT NULL,   -- JSON array of slots
        message      TEXT NOT NULL,
        time         TEXT NOT NULL
    );
    CREATE INDEX events_by_app ON events (app, revision);
    CREATE INDEX events_by_time ON events (time);
    INSERT INTO meta (key, value) SELECT 'events_floor', value FROM meta WHERE key = 'revision';
    """,
    # 3: swarm: a publish mode per slot and placement constraints per app.
    """
    ALTER TABLE bindings ADD COLUMN publish_mode TEXT NOT NULL DEFAULT 'ingress'
        CHECK (publish_mode IN ('ingress', 'host'));
    ALTER TABLE apps ADD COLUMN constraints TEXT NOT NULL DEFAULT '[]';  -- JSON array
    """,
    # 4: the revision whose rollout Docker last finished, so a result still owed
    # (a rollout cut short by a crash or a Docker outage) survives a restart.
    """
    ALTER TABLE apps ADD COLUMN applied_revision INTEGER NOT NULL DEFAULT 0;
    UPDATE apps SET applied_revision = revision;
    """,
    # 5: stateful apps: volumes, a stop grace period, the uid that names the volumes
    # Miasma makes for an app's image, and the swarm node an app's data lives on.
    """
    ALTER TABLE apps ADD COLUMN volumes TEXT NOT NULL DEFAULT '[]';  -- JSON [[source, target, ro]]
    ALTER TABLE apps ADD COLUMN stop_grace REAL NOT NULL DEFAULT 10 CHECK (stop_grace >= 0);
    ALTER TABLE apps ADD COLUMN uid TEXT NOT NULL DEFAULT '';
    UPDATE apps SET uid = lower(hex(randomblob(3)));
    ALTER TABLE apps ADD COLUMN node TEXT NOT NULL DEFAULT '';
    """,
    # 6: request IDs of changes made (AIP-155), written with the change: a retry of a
    # request whose answer was lost is not applied twice. Kept for a day.
    """
    CREATE TABLE requests (
        id       TEXT PRIMARY KEY,
        app      TEXT NOT NULL,
        revision INTEGER NOT NULL,
        time     TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX requests_by_time ON requests (time);
    """,
    # 7: the group an app belongs to (Miasma's --group; empty: none).
    """
    ALTER TABLE apps ADD COLUMN group_name TEXT NOT NULL DEFAULT '';
    """,
    # 8: apps left out of listings unless asked for (Miasma's --hidden).
    """
    ALTER TABLE apps ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0 CHECK (hidden IN (0, 1));
    """,
    # 9: the image an upgrade pulled, pinned (empty: the tag).
    """
    ALTER TABLE apps ADD COLUMN image_digest TEXT NOT NULL DEFAULT '';
    """,
    # 10: the name a renamed app's image volumes carry (empty: its name).
    """
    ALTER TABLE apps ADD COLUMN volume_stem TEXT NOT NULL DEFAULT '';
    """,
    # 11: the audit log: each change, in its own transaction, and each refused call.
    """
    CREATE TABLE audit (
        id       INTEGER PRIMARY KEY,
        time     TEXT NOT NULL,
        identity TEXT NOT NULL,
        source   TEXT NOT NULL,
        method   TEXT NOT NULL,
        app      TEXT NOT NULL,     -- '' for none
        revision INTEGER NOT NULL,  -- the change's; 0 for a refusal or failure
        result   TEXT NOT NULL,     -- 'OK', or 'CODE REASON: message'
        summary  TEXT NOT NULL
    );
    CREATE INDEX audit_by_app ON audit (app, id);
    CREATE INDEX audit_by_identity ON audit (identity, id);
    """,
    # 12: the group of an event's app when it was written (a group-limited watcher's
    # view; older events take the app's group now).
    """
    ALTER TABLE events ADD COLUMN app_group TEXT NOT NULL DEFAULT '';
    UPDATE events SET app_group = coalesce(
        (SELECT group_name FROM apps WHERE apps.name = events.app), '');
    """,
    # 13: the routes of an app (host, path, slot, tls: JSON), and those of an event's app
    # when it was written (docs/routing.md).
    """
    ALTER TABLE apps ADD COLUMN routes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE events ADD COLUMN app_routes TEXT NOT NULL DEFAULT '[]';
    """,
)
