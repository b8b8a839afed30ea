-- realistic-schema.sql — a table with realistic, moderately compressible rows (zstd -3 ≈ 2.4:1 on its
-- relation files, vs ≈ 20:1 for pgbench's blank-padded tables). Database "realdata" of the bench cluster.
-- The same generator as the project's pgBackRest/barman anchor measurements.
CREATE SCHEMA IF NOT EXISTS realistic;
CREATE TABLE realistic.events (
    id          bigint        NOT NULL,
    account_id  integer       NOT NULL,
    created_at  timestamptz   NOT NULL,
    amount      numeric(12,2) NOT NULL,
    status      text          NOT NULL,
    uid         uuid          NOT NULL,
    ref         text          NOT NULL,   -- md5 hex, 32 chars
    body        text          NOT NULL,   -- 16..192 hex chars cut from md5/sha256 of random values
    attrs       jsonb         NOT NULL    -- 5-6 keys, two of them random names k0..k299, random values
);
