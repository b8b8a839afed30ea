-- realistic-insert.sql — row generator: psql -v tbl=realistic.events -v lo=1 -v hi=1000000 -f realistic-insert.sql
INSERT INTO :tbl (id, account_id, created_at, amount, status, uid, ref, body, attrs)
SELECT g,
       1 + floor(random() * 200000)::int,
       timestamptz '2024-01-01 00:00:00+00' + random() * interval '730 days',
       round((random() * 10000)::numeric, 2),
       (ARRAY['new','paid','shipped','delivered','cancelled','refunded'])[1 + floor(random() * 6)::int],
       gen_random_uuid(),
       md5(random()::text),
       left(md5(random()::text) || encode(sha256(random()::text::bytea), 'hex')
            || md5(random()::text) || encode(sha256(random()::text::bytea), 'hex'), 16 + floor(random() * 177)::int),
       jsonb_build_object(
           'src',   (ARRAY['web','ios','android','api','batch','partner'])[1 + floor(random() * 6)::int],
           'score', round(random()::numeric, 4),
           'k' || floor(random() * 300)::int, floor(random() * 1000000)::int,
           'k' || floor(random() * 300)::int, substr(md5(random()::text), 1, 4 + floor(random() * 20)::int),
           'ip', '10.' || floor(random() * 256)::int || '.' || floor(random() * 256)::int || '.' || floor(random() * 256)::int)
       || CASE WHEN random() < 0.5
               THEN jsonb_build_object('tags', jsonb_build_array(substr(md5(random()::text), 1, 8), substr(md5(random()::text), 1, 8)))
               ELSE '{}'::jsonb END
FROM generate_series(:lo::bigint, :hi::bigint) AS g;
