-- graphexec SQLite checkpoint store, schema version 2: bodies may be stored compressed.
-- Applied by SQLiteStore in one transaction, followed by PRAGMA user_version = 2.

-- How the body blob is stored: 0 as written (every row of version 1), 1 zlib-compressed
-- (zlib.compress of the msgpack body; the checksum is still the CRC-32 of the msgpack body).
-- SQLiteStore compresses a body of 512 bytes or more when that saves an eighth or more: a delta
-- carrying a kilobyte of text then fills about 600 bytes, and 6 rows share a page instead of 3.
-- Snapshots are never compressed: inflating a 200 KB base costs about 1 ms on every restore.
ALTER TABLE checkpoints ADD COLUMN body_encoding INTEGER NOT NULL DEFAULT 0
    CHECK (body_encoding IN (0, 1));
