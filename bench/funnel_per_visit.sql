-- Funnels over one row per visit in SQL (README, Speed, "Funnels"): the two shapes measured and not kept (encoded days matched with NumPy answer instead).
-- Run with psql against a database seeded by `bench/funnel_bench.py --keep` (edit the days), e.g.
--   psql -h 127.0.0.1 -U postgres -d trackside_bench_XXXX -v first="'2026-12-01'" -v last="'2026-12-03'" -f bench/funnel_per_visit.sql
-- The funnel: `/` > `/p/*` > `/u/*` > goal `upload`.
\timing on
SET work_mem = '256MB';
SET max_parallel_workers_per_gather = 0;
SET jit = off;

-- 1. One string per visit: groups of page views and events of one microsecond offset, "\x1e" + 11 digits,
--    each token "\x1f" + P(ath) or E(vent); a step is the first group from the previous step's group on
--    (so strictly later) holding a matching token.
DROP TABLE IF EXISTS fv_string;
CREATE TABLE fv_string AS
SELECT g.day, g.visit_id, v.who, string_agg(g.grp, '' ORDER BY g.us) AS seq
FROM (
  SELECT t.day, t.visit_id, t.us,
         E'\x1e' || lpad(t.us::text, 11, '0') || string_agg(E'\x1f' || t.tok, '' ORDER BY t.tok) AS grp
  FROM (
    SELECT day, visit_id, (extract(epoch FROM ts - day::timestamp) * 1000000)::bigint AS us,
           'P' || translate(path, E'\x1e\x1f', E'\x1a\x1a') AS tok
      FROM fact_page_views WHERE day BETWEEN :first AND :last
    UNION ALL
    SELECT day, visit_id, (extract(epoch FROM ts - day::timestamp) * 1000000)::bigint, 'E' || name
      FROM fact_site_events WHERE day BETWEEN :first AND :last AND kind = 'event' AND visit_id IS NOT NULL
  ) t GROUP BY t.day, t.visit_id, t.us
) g JOIN fact_visits v ON v.day = g.day AND v.id = g.visit_id
WHERE v.day BETWEEN :first AND :last
GROUP BY g.day, g.visit_id, v.who;

SELECT count(p1), count(p2), count(p3), count(p4) FROM (
 SELECT *, CASE WHEN p3 > 0 THEN regexp_instr(seq, E'\x1e[^\x1e]*\x1fEupload([\x1e\x1f]|$)', p3 + 1) END p4 FROM (
  SELECT *, CASE WHEN p2 > 0 THEN regexp_instr(seq, E'\x1e[^\x1e]*\x1fP/u/[^/\x1e\x1f]*([\x1e\x1f]|$)', p2 + 1) END p3 FROM (
   SELECT *, regexp_instr(seq, E'\x1e[^\x1e]*\x1fP/p/[^/\x1e\x1f]*([\x1e\x1f]|$)', p1 + 1) p2 FROM (
    SELECT day, who, seq, regexp_instr(seq, E'\x1e[^\x1e]*\x1fP/([\x1e\x1f]|$)') p1 FROM fv_string OFFSET 0
   ) a WHERE p1 > 0 OFFSET 0
  ) b OFFSET 0
 ) c OFFSET 0
) d;

-- 2. Arrays per visit: paths (and events as 'E:name'), the same with the last segment as '*', offsets.
DROP TABLE IF EXISTS fv_arr;
CREATE TABLE fv_arr AS
SELECT t.day, t.visit_id, v.who,
       array_agg(t.tok ORDER BY t.us, t.tok) AS toks,
       array_agg(t.gen ORDER BY t.us, t.tok) AS gens,
       array_agg(t.us ORDER BY t.us, t.tok) AS ts
FROM (
  SELECT day, visit_id, (extract(epoch FROM ts - day::timestamp) * 1000000)::bigint AS us, path::text AS tok,
         regexp_replace(path, '/[^/]*$', '/*') AS gen
    FROM fact_page_views WHERE day BETWEEN :first AND :last
  UNION ALL
  SELECT day, visit_id, (extract(epoch FROM ts - day::timestamp) * 1000000)::bigint, 'E:' || name, 'E:' || name
    FROM fact_site_events WHERE day BETWEEN :first AND :last AND kind = 'event' AND visit_id IS NOT NULL
) t JOIN fact_visits v ON v.day = t.day AND v.id = t.visit_id
WHERE v.day BETWEEN :first AND :last
GROUP BY t.day, t.visit_id, v.who;
VACUUM ANALYZE fv_arr;
SELECT pg_size_pretty(pg_total_relation_size('fv_arr')), count(*) FROM fv_arr;
SET work_mem = '128MB';
SELECT count(*) FROM fv_arr;

-- The whole funnel (no ties in the seeded data: an exact version would skip a step's equal offsets).
WITH m AS MATERIALIZED (
 SELECT day, who, ts[p1] t1, ts[p2] t2, ts[p3] t3, ts[p4] t4 FROM (
  SELECT *, CASE WHEN p3 IS NOT NULL THEN array_position(toks, 'E:upload', p3 + 1) END p4 FROM (
   SELECT *, CASE WHEN p2 IS NOT NULL THEN array_position(gens, '/u/*', p2 + 1) END p3 FROM (
    SELECT *, array_position(gens, '/p/*', p1 + 1) p2 FROM (
     SELECT day, who, toks, gens, ts, array_position(toks, '/') p1 FROM fv_arr OFFSET 0
    ) a WHERE p1 IS NOT NULL OFFSET 0
   ) b OFFSET 0
  ) c OFFSET 0
 ) d
), u AS (
 SELECT CASE WHEN who LIKE 'u:%' THEN who ELSE who || '|' || day END who_u, day, s.step, s.t, s.secs
 FROM m CROSS JOIN LATERAL (VALUES (0, t1, NULL::float8), (1, t2, (t2 - t1) / 1e6::float8),
                                   (2, t3, (t3 - t2) / 1e6::float8), (3, t4, (t4 - t3) / 1e6::float8)) s(step, t, secs)
 WHERE s.t IS NOT NULL
), firsts AS (
 SELECT step, secs, row_number() OVER (PARTITION BY step, who_u ORDER BY day, t, secs) r FROM u
), ranked AS (
 SELECT step, secs, row_number() OVER (PARTITION BY step ORDER BY secs) rn, count(*) OVER (PARTITION BY step) n
 FROM firsts WHERE r = 1
)
SELECT step, max(n) AS visitors, avg(CASE WHEN 2 * rn >= n AND 2 * rn <= n + 2 THEN secs END) AS median
FROM ranked GROUP BY step ORDER BY step;

DROP TABLE fv_string;
DROP TABLE fv_arr;
