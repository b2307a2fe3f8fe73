-- The metadata store's SQL for PostgreSQL (httpupload/metadata/postgres.py),
-- read by httpupload/metadata/query.py, which says how a query is written:
-- a "-- name:" line starts each; several statements run in one transaction
-- and answer with the rows of the last that returns rows; an empty query is
-- nothing to do.  {columns} and {values} are the record's columns and their
-- parameters; {name} is the query (fragment) of that name.  Parameters:
-- %(name)s.  Several nodes share the database: a query that runs outside a
-- transaction is one statement, written so that running it twice (after a
-- lost connection) is harmless.
-- Advisory lock keys (the two-int form): a class of our own, 1213485141
-- ("HTPU"), then the object (0: the schema, 1: the global quota); owners'
-- locks are in the class after it.

-- name: migration_1
CREATE TABLE files (
        file_id text PRIMARY KEY,
        owner text NOT NULL,
        filename text NOT NULL,
        size bigint NOT NULL,
        content_type text,
        purpose text NOT NULL,
        created double precision NOT NULL,
        slot_expires double precision NOT NULL,
        expires double precision,
        completed boolean NOT NULL DEFAULT false,
        completed_at double precision,
        sha256 text
    );
CREATE INDEX files_owner_created ON files (owner, created);
CREATE INDEX files_expires ON files (expires) WHERE completed;
CREATE INDEX files_slots ON files (slot_expires) WHERE NOT completed;

-- name: migration_2
ALTER TABLE files ADD COLUMN lease_until double precision;

-- name: schema_lock
-- Nodes starting together migrate one after another.
SELECT pg_advisory_xact_lock(1213485141, 0)

-- name: schema_table
SELECT to_regclass('schema_version')

-- name: schema_version
SELECT version FROM schema_version

-- name: schema_create
CREATE TABLE schema_version (version integer NOT NULL);
INSERT INTO schema_version VALUES (0)

-- name: schema_set
UPDATE schema_version SET version = %(version)s

-- name: _held
-- Rows that hold room now: stored and not yet expired, or a live slot.
((completed AND (expires IS NULL OR expires > %(now)s)) OR
 (NOT completed AND slot_expires > %(now)s))

-- name: _due
-- Rows the sweep takes: expired files, and slots dead since %(dead)s.
((completed AND expires IS NOT NULL AND expires <= %(now)s) OR
 (NOT completed AND slot_expires <= %(dead)s))

-- name: lock_owner
-- One owner's reservations, on any node, one after another.
SELECT pg_advisory_xact_lock(1213485142, %(owner_key)s)

-- name: lock_global
-- All of them, when the check reads what everyone holds (always taken after
-- the owner's: two transactions never wait on each other).
SELECT pg_advisory_xact_lock(1213485141, 1)

-- name: insert
INSERT INTO files ({columns}) VALUES ({values})

-- name: window
SELECT created, size, purpose,
       CASE WHEN completed THEN NULL ELSE slot_expires END
FROM files WHERE owner = %(owner)s
AND created > %(start)s AND (completed OR slot_expires > %(now)s)
ORDER BY created

-- name: held
SELECT purpose, SUM(size)::bigint FROM files WHERE owner = %(owner)s AND {_held}
GROUP BY purpose

-- name: pending
SELECT slot_expires FROM files WHERE owner = %(owner)s
AND NOT completed AND slot_expires > %(now)s ORDER BY slot_expires

-- name: global_bytes
SELECT COALESCE(SUM(size), 0)::bigint FROM files WHERE {_held}

-- name: usage_by_owner
SELECT owner, COUNT(*), SUM(size)::bigint FROM files WHERE {_held}
GROUP BY owner ORDER BY SUM(size) DESC

-- name: get
SELECT {columns} FROM files WHERE file_id = %(file_id)s

-- name: complete
-- The updated row if it was an open slot, else the row as it stands (if any).
WITH done AS (
    UPDATE files SET completed = true, completed_at = %(at)s,
           sha256 = %(sha256)s, content_type = %(content_type)s
    WHERE file_id = %(file_id)s AND NOT completed RETURNING {columns}
)
SELECT {columns} FROM done UNION ALL
SELECT {columns} FROM files WHERE file_id = %(file_id)s
AND NOT EXISTS (SELECT 1 FROM done)

-- name: extend_slot
-- A partial upload is kept for the slot: its PUT URL (and reservation) lasts
-- until %(until)s.  Never shortens (so running it twice is harmless); a stored
-- file is left alone.  The updated row, else the row as it stands (if any).
WITH extended AS (
    UPDATE files SET slot_expires = %(until)s
    WHERE file_id = %(file_id)s AND NOT completed AND slot_expires < %(until)s
    RETURNING {columns}
)
SELECT {columns} FROM extended UNION ALL
SELECT {columns} FROM files WHERE file_id = %(file_id)s
AND NOT EXISTS (SELECT 1 FROM extended)

-- name: delete
DELETE FROM files WHERE file_id = %(file_id)s RETURNING {columns}

-- name: list_owner
SELECT {columns} FROM files WHERE owner = %(owner)s AND completed
ORDER BY completed_at DESC

-- name: owner_records
SELECT {columns} FROM files WHERE owner = %(owner)s

-- name: delete_owner
DELETE FROM files WHERE owner = %(owner)s RETURNING {columns}

-- name: due
SELECT {columns} FROM files WHERE {_due} LIMIT %(limit)s

-- name: claim_due
-- Rows another sweeper is claiming right now are skipped, not waited for;
-- rows it claimed stay out until their lease has passed.  Run twice, a lost
-- claim's rows only wait for their lease.
WITH due AS (
    SELECT file_id FROM files
    WHERE {_due} AND (lease_until IS NULL OR lease_until <= %(now)s)
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
UPDATE files SET lease_until = %(until)s FROM due
WHERE files.file_id = due.file_id RETURNING {files_columns}

-- name: hold
-- Once per id.  Never shortens a lease (a sweeper's claim, or an earlier hold).
UPDATE files SET lease_until = GREATEST(COALESCE(lease_until, 0), %(until)s)
WHERE NOT completed AND file_id = %(file_id)s

-- name: all_ids
SELECT file_id FROM files

-- name: incomplete_ids
SELECT file_id FROM files WHERE NOT completed
