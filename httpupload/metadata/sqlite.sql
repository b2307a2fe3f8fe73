-- The metadata store's SQL for SQLite (httpupload/metadata/sqlite.py), read by
-- httpupload/metadata/query.py, which says how a query is written: a
-- "-- name:" line starts each; several statements run in one transaction
-- (BEGIN IMMEDIATE: one writer at a time) and answer with the rows of the
-- last that returns rows; an empty query is nothing to do.
-- {columns} and {values} are the record's columns and their parameters;
-- {name} is the query (fragment) of that name.  Parameters: :name.
-- One statement per query where PostgreSQL has RETURNING: that needs SQLite
-- 3.35, and the service runs on older ones too.

-- name: migration_1
CREATE TABLE files (
        file_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        filename TEXT NOT NULL,
        size INTEGER NOT NULL,
        content_type TEXT,
        purpose TEXT NOT NULL,
        created REAL NOT NULL,
        slot_expires REAL NOT NULL,
        expires REAL,
        completed INTEGER NOT NULL DEFAULT 0,
        completed_at REAL,
        sha256 TEXT
    );
CREATE INDEX files_owner_created ON files (owner, created);
CREATE INDEX files_expires ON files (expires) WHERE completed = 1;
CREATE INDEX files_slots ON files (slot_expires) WHERE completed = 0;

-- name: migration_2
-- A sweeper's lease on a due record (claim_due), so that sweepers in several
-- processes never take the same record.
ALTER TABLE files ADD COLUMN lease_until REAL;

-- name: _held
-- Rows that hold room now: stored and not yet expired, or a live slot.
((completed = 1 AND (expires IS NULL OR expires > :now)) OR
 (completed = 0 AND slot_expires > :now))

-- name: _due
-- Rows the sweep takes: expired files, and slots dead since :dead.
((completed = 1 AND expires IS NOT NULL AND expires <= :now) OR
 (completed = 0 AND slot_expires <= :dead))

-- name: lock_owner
-- Nothing: a reservation's BEGIN IMMEDIATE already makes it the only writer.

-- name: lock_global

-- name: insert
INSERT INTO files ({columns}) VALUES ({values})

-- name: window
SELECT created, size, purpose,
       CASE WHEN completed = 1 THEN NULL ELSE slot_expires END
FROM files WHERE owner = :owner
AND created > :start AND (completed = 1 OR slot_expires > :now)
ORDER BY created

-- name: held
SELECT purpose, SUM(size) FROM files WHERE owner = :owner AND {_held}
GROUP BY purpose

-- name: pending
SELECT slot_expires FROM files WHERE owner = :owner
AND completed = 0 AND slot_expires > :now ORDER BY slot_expires

-- name: global_bytes
SELECT COALESCE(SUM(size), 0) FROM files WHERE {_held}

-- name: usage_by_owner
SELECT owner, COUNT(*), SUM(size) FROM files WHERE {_held}
GROUP BY owner ORDER BY SUM(size) DESC

-- name: get
SELECT {columns} FROM files WHERE file_id = :file_id

-- name: complete
-- The record as it stands afterwards: stored now, or before.
UPDATE files SET completed = 1, completed_at = :at, sha256 = :sha256,
       content_type = :content_type
WHERE file_id = :file_id AND completed = 0;
SELECT {columns} FROM files WHERE file_id = :file_id

-- name: extend_slot
-- A partial upload is kept for the slot: its PUT URL (and reservation) lasts
-- until :until.  Never shortens; a stored file is left alone.  The record as
-- it stands afterwards.
UPDATE files SET slot_expires = :until
WHERE file_id = :file_id AND completed = 0 AND slot_expires < :until;
SELECT {columns} FROM files WHERE file_id = :file_id

-- name: delete
SELECT {columns} FROM files WHERE file_id = :file_id;
DELETE FROM files WHERE file_id = :file_id

-- name: list_owner
SELECT {columns} FROM files WHERE owner = :owner AND completed = 1
ORDER BY completed_at DESC

-- name: owner_records
SELECT {columns} FROM files WHERE owner = :owner

-- name: delete_owner
SELECT {columns} FROM files WHERE owner = :owner;
DELETE FROM files WHERE owner = :owner

-- name: due
SELECT {columns} FROM files WHERE {_due} LIMIT :limit

-- name: claim_due
-- Leases exactly the rows it answers with, in the order found: their ids are
-- kept in a table of the connection's own (TEMP: never in the database file).
CREATE TEMP TABLE IF NOT EXISTS claimed (file_id TEXT PRIMARY KEY);
DELETE FROM temp.claimed;
INSERT INTO temp.claimed
SELECT file_id FROM files
WHERE {_due} AND (lease_until IS NULL OR lease_until <= :now) LIMIT :limit;
UPDATE files SET lease_until = :until
WHERE file_id IN (SELECT file_id FROM temp.claimed);
SELECT {columns} FROM files JOIN temp.claimed USING (file_id)
ORDER BY temp.claimed.rowid

-- name: hold
-- Once per id.  Never shortens a lease (a sweeper's claim, or an earlier hold).
UPDATE files SET lease_until = MAX(COALESCE(lease_until, 0), :until)
WHERE completed = 0 AND file_id = :file_id

-- name: all_ids
SELECT file_id FROM files

-- name: incomplete_ids
SELECT file_id FROM files WHERE completed = 0
