-- One of each kind of object README lists as carried by a clone, for the guard's tests: a
-- dump of this database by pg_dump 13, 15 and 17 must pass the guard's allow-list. Run as a
-- superuser (extensions, a publication), on PostgreSQL 13 or later; what needs a later
-- server is created only there.

SET client_min_messages = error;

CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;
COMMENT ON EXTENSION citext IS 'case-insensitive text';

CREATE SCHEMA extra;
COMMENT ON SCHEMA extra IS 'objects beside public';

CREATE TYPE extra.status AS ENUM ('planned', 'active', 'retired');
CREATE TYPE extra.pair AS (lo integer, hi integer);
CREATE TYPE extra.floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE DOMAIN extra.positive AS integer CHECK (VALUE > 0);
CREATE DOMAIN extra.label AS text DEFAULT 'x' NOT NULL;
ALTER DOMAIN extra.label ADD CONSTRAINT label_short CHECK (length(VALUE) < 100) NOT VALID;
COMMENT ON TYPE extra.status IS 'life cycle';
COMMENT ON DOMAIN extra.positive IS 'above zero';

CREATE SEQUENCE extra.ticket_seq START 1000 INCREMENT 5 CACHE 10;
SELECT setval('extra.ticket_seq', 1235);

CREATE FUNCTION extra.touch() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    NEW.changed := now();  -- a comment; and a string: 'it''s'
    RETURN NEW;
END
$body$;
CREATE FUNCTION extra.add(a integer, b integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog
    AS 'select a + b';
CREATE FUNCTION extra.lower_label(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower(t) $$;
CREATE PROCEDURE extra.bump(n integer) LANGUAGE plpgsql AS $$ BEGIN PERFORM n + 1; END $$;
CREATE AGGREGATE extra.total(integer) (sfunc = extra.add, stype = integer, initcond = '0');
CREATE FUNCTION extra.pair_eq(extra.pair, extra.pair) RETURNS boolean LANGUAGE sql IMMUTABLE
    AS $$ SELECT $1.lo = $2.lo AND $1.hi = $2.hi $$;
CREATE OPERATOR extra.=== (leftarg = extra.pair, rightarg = extra.pair, function = extra.pair_eq);
CREATE FUNCTION extra.pair_text(extra.pair) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT $1.lo || '..' || $1.hi $$;
CREATE CAST (extra.pair AS text) WITH FUNCTION extra.pair_text(extra.pair);
COMMENT ON FUNCTION extra.add(integer, integer) IS 'sum; of two';

CREATE COLLATION extra.nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TEXT SEARCH CONFIGURATION extra.english_simple (COPY = pg_catalog.english);

CREATE TABLE extra.site (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name extra.label NOT NULL UNIQUE,
    slug text COLLATE extra.nocase,
    status extra.status NOT NULL DEFAULT 'planned',
    span extra.floatrange,
    bounds extra.pair,
    tags text[] DEFAULT '{}'::text[],
    score numeric(8, 2) CHECK (score >= 0),
    name_len integer GENERATED ALWAYS AS (length(name)) STORED,
    note citext,
    changed timestamptz
);
ALTER TABLE extra.site ALTER COLUMN note SET STATISTICS 500;
ALTER TABLE extra.site ALTER COLUMN tags SET STORAGE EXTERNAL;
ALTER TABLE extra.site ALTER COLUMN score SET (n_distinct = 100);
ALTER TABLE extra.site ADD CONSTRAINT site_slug_check CHECK (slug <> '') NOT VALID;
ALTER TABLE extra.site REPLICA IDENTITY FULL;
COMMENT ON TABLE extra.site IS 'sites; with a ''quote''';
COMMENT ON COLUMN extra.site.name IS 'unique name';

CREATE TABLE extra.rack (
    id bigserial PRIMARY KEY,
    site_id integer NOT NULL REFERENCES extra.site (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    ticket integer DEFAULT nextval('extra.ticket_seq'),
    units extra.positive,
    name text NOT NULL,
    during tstzrange,
    EXCLUDE USING gist (during WITH &&) WHERE (units IS NOT NULL)
) WITH (fillfactor = 80);
CREATE INDEX rack_name_trgm ON extra.rack USING gin (name public.gin_trgm_ops);
CREATE INDEX rack_lower ON extra.rack (extra.lower_label(name)) INCLUDE (units) WHERE units > 1;
CREATE UNIQUE INDEX rack_site_name ON extra.rack (site_id, name);
ALTER TABLE extra.rack CLUSTER ON rack_site_name;
CREATE STATISTICS extra.rack_stats (dependencies) ON site_id, units FROM extra.rack;

CREATE UNLOGGED TABLE extra.scratch (k text PRIMARY KEY, v jsonb);
CREATE TABLE extra.base (id integer, created date DEFAULT CURRENT_DATE);
CREATE TABLE extra.child (extra_note text) INHERITS (extra.base);
CREATE TABLE extra.typed OF extra.pair;

CREATE TABLE extra.event (id bigint NOT NULL, at date NOT NULL, kind text, body text)
    PARTITION BY RANGE (at);
CREATE TABLE extra.event_2024 PARTITION OF extra.event FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE extra.event_rest PARTITION OF extra.event DEFAULT;
ALTER TABLE extra.event ADD PRIMARY KEY (id, at);
CREATE INDEX event_kind ON extra.event (kind);
CREATE TABLE extra.shard (id integer, region text) PARTITION BY LIST (region);
CREATE TABLE extra.shard_eu PARTITION OF extra.shard FOR VALUES IN ('eu', 'uk');
CREATE TABLE extra.bucket (id integer) PARTITION BY HASH (id);
CREATE TABLE extra.bucket_0 PARTITION OF extra.bucket FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE extra.bucket_1 PARTITION OF extra.bucket FOR VALUES WITH (MODULUS 2, REMAINDER 1);

CREATE TRIGGER site_touch BEFORE UPDATE ON extra.site FOR EACH ROW EXECUTE FUNCTION extra.touch();
CREATE CONSTRAINT TRIGGER rack_check AFTER INSERT ON extra.rack DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION extra.touch();
ALTER TABLE extra.rack DISABLE TRIGGER rack_check;
CREATE RULE scratch_keep AS ON DELETE TO extra.scratch DO INSTEAD NOTHING;

CREATE VIEW extra.site_names WITH (security_barrier) AS
    SELECT id, name, 'a;b' AS odd, tags[1:2] AS first_tags FROM extra.site WHERE status <> 'retired'
    WITH LOCAL CHECK OPTION;
CREATE MATERIALIZED VIEW extra.rack_count AS
    SELECT site_id, count(*) AS racks FROM extra.rack GROUP BY site_id;
CREATE MATERIALIZED VIEW extra.rack_empty AS SELECT 1 AS one WITH NO DATA;
COMMENT ON VIEW extra.site_names IS 'live sites';
COMMENT ON MATERIALIZED VIEW extra.rack_count IS 'racks per site';

ALTER TABLE extra.site ENABLE ROW LEVEL SECURITY;
ALTER TABLE extra.rack ENABLE ROW LEVEL SECURITY;
ALTER TABLE extra.rack FORCE ROW LEVEL SECURITY;
CREATE POLICY site_live ON extra.site FOR SELECT USING (status <> 'retired');
CREATE POLICY rack_all ON extra.rack USING (true) WITH CHECK (units IS NULL OR units < 100);

CREATE PUBLICATION extra_pub FOR TABLE extra.site, extra.rack WITH (publish = 'insert, update');

INSERT INTO extra.site (name, slug, status, span, bounds, tags, score, note)
VALUES ('Alpha', 'alpha', 'active', '[1.5,2.5)', '(1,2)', '{a,b}', 3.5, E'tab\there, back\\slash'),
       ('Beta', 'beta', 'planned', NULL, NULL, '{}', NULL, 'COPY x FROM stdin;');
INSERT INTO extra.rack (site_id, units, name, during)
SELECT s.id, 42, 'r-' || s.name, tstzrange('2024-01-01'::timestamptz + s.id * interval '40 days', '2024-01-02'::timestamptz + s.id * interval '40 days')
    FROM extra.site s;
INSERT INTO extra.event VALUES (1, '2024-03-01', 'boot', E'\\.'), (2, '2026-01-01', 'late', '-- Name: x; Type: TABLE; Schema: public; Owner: -');
INSERT INTO extra.shard VALUES (1, 'eu');
INSERT INTO extra.bucket SELECT generate_series(1, 10);
INSERT INTO extra.child VALUES (1, '2024-01-01', 'kid');
INSERT INTO extra.scratch VALUES ('k', '{"a": [1, "x;y"]}');
REFRESH MATERIALIZED VIEW extra.rack_count;

SELECT lo_from_bytea(424242, '\x68656c6c6f'::bytea);
COMMENT ON LARGE OBJECT 424242 IS 'a greeting';

-- PostgreSQL 14 and later: SQL-standard function bodies, column compression.
DO $do$
BEGIN
    IF current_setting('server_version_num')::integer >= 140000 THEN
        EXECUTE $sql$
            CREATE FUNCTION extra.atomic_sum(a integer, b integer) RETURNS integer
                LANGUAGE sql IMMUTABLE
                BEGIN ATOMIC
                    SELECT a + b;
                END
        $sql$;
        EXECUTE $sql$
            CREATE PROCEDURE extra.atomic_insert(k text)
                LANGUAGE sql
                BEGIN ATOMIC
                    INSERT INTO extra.scratch VALUES (k, '{}');
                    SELECT CASE WHEN k = 'x' THEN 1 ELSE 2 END;
                END
        $sql$;
        EXECUTE $sql$
            CREATE FUNCTION extra.atomic_cases(key text) RETURNS SETOF integer
                LANGUAGE sql STABLE
                BEGIN ATOMIC
                    SELECT CASE WHEN s.k = key THEN 1 END AS n
                        FROM extra.scratch s
                        WHERE CASE WHEN key IS NULL THEN false ELSE true END
                        ORDER BY CASE WHEN s.k = 'x' THEN 0 ELSE 1 END, 1;
                END
        $sql$;
        EXECUTE 'ALTER TABLE extra.scratch ALTER COLUMN v SET COMPRESSION pglz';
    END IF;
END
$do$;
