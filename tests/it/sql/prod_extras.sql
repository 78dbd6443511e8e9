-- Production-like ownership and privileges for a database loaded from
-- fixtures/netpoint.sql. Run as a superuser, connected to that database.
--
-- Afterwards the application role `netpoint` owns the database and every
-- object in schema public, and the read-only role `netpoint_ro` has the
-- narrower grants a reporting user would get. Neither role exists on a
-- freshly started server, so a dump of this database only loads elsewhere
-- when it leaves owners and privileges out.
--
-- Plain SQL only (no psql meta-commands); safe to run more than once, and in
-- several databases of the same server.

SET client_min_messages = warning;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'netpoint') THEN
        CREATE ROLE netpoint NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'netpoint_ro') THEN
        CREATE ROLE netpoint_ro NOLOGIN;
    END IF;
END
$$;

-- The application owns its database.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I OWNER TO netpoint', current_database());
END
$$;

-- Tables, views and functions in public. Identity sequences are owned by
-- their tables and follow them; any free-standing sequence is moved too.
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT c.oid::regclass AS name, c.relkind
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
           AND NOT (c.relkind = 'S' AND EXISTS (
                   SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass
                      AND d.objid = c.oid
                      AND d.deptype IN ('a', 'i')))
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO netpoint',
                       CASE obj.relkind
                           WHEN 'v' THEN 'VIEW'
                           WHEN 'm' THEN 'MATERIALIZED VIEW'
                           WHEN 'f' THEN 'FOREIGN TABLE'
                           WHEN 'S' THEN 'SEQUENCE'
                           ELSE 'TABLE'
                       END, obj.name);
    END LOOP;

    FOR obj IN
        SELECT p.oid::regprocedure AS name
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO netpoint', obj.name);
    END LOOP;

    FOR obj IN
        SELECT format('%I.%I', n.nspname, c.collname) AS name
          FROM pg_catalog.pg_collation c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace
         WHERE n.nspname = 'public'
    LOOP
        EXECUTE format('ALTER COLLATION %s OWNER TO netpoint', obj.name);
    END LOOP;
END
$$;

-- The schema belongs to the application (as after an upgrade from an older
-- server), and nobody else creates objects in it.
ALTER SCHEMA public OWNER TO netpoint;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO netpoint_ro;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO netpoint_ro', current_database());
END
$$;

-- Read-only access to everything ...
GRANT SELECT ON ALL TABLES IN SCHEMA public TO netpoint_ro;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO netpoint_ro;

-- ... except secrets: sessions and API tokens are out entirely, user rows
-- only without the password hash, webhooks and data sources without their
-- credentials (column privileges).
REVOKE ALL ON TABLE public.django_session FROM netpoint_ro;
REVOKE ALL ON TABLE public.users_token FROM netpoint_ro;
REVOKE ALL ON TABLE public.users_user FROM netpoint_ro;
GRANT SELECT (id, last_login, is_superuser, username, first_name, last_name, email,
              is_staff, is_active, date_joined)
    ON TABLE public.users_user TO netpoint_ro;
REVOKE ALL ON TABLE public.extras_webhook FROM netpoint_ro;
GRANT SELECT (id, created, last_updated, name, payload_url, http_method, http_content_type,
              ssl_verification, description)
    ON TABLE public.extras_webhook TO netpoint_ro;
REVOKE ALL ON TABLE public.core_datasource FROM netpoint_ro;
GRANT SELECT (id, created, last_updated, name, type, status, enabled, last_synced, description)
    ON TABLE public.core_datasource TO netpoint_ro;

-- The change log is append-only, even for the application.
REVOKE UPDATE, TRUNCATE ON TABLE public.extras_objectchange FROM netpoint;

-- Functions are not executable by default; the reporting role gets the one
-- it needs.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.dcim_rack_units_free(bigint) TO netpoint_ro;

-- Objects the application creates later are readable too.
ALTER DEFAULT PRIVILEGES FOR ROLE netpoint IN SCHEMA public
    GRANT SELECT ON TABLES TO netpoint_ro;
ALTER DEFAULT PRIVILEGES FOR ROLE netpoint IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO netpoint_ro;

RESET client_min_messages;

-- Production keeps a long changelog; clones leave its data out by default.
INSERT INTO public.extras_objectchange
    (id, "time", user_name, request_id, action, changed_object_id, object_repr,
     prechange_data, postchange_data, changed_object_type_id)
SELECT 100000 + n,
       timestamptz '2024-01-01 00:00:00+00' + n * interval '7 minutes',
       'changelog-bot',
       md5('request-' || n)::uuid,
       (ARRAY['create', 'update', 'delete'])[1 + n % 3],
       n,
       'object ' || n,
       CASE WHEN n % 3 = 0 THEN NULL ELSE jsonb_build_object('name', 'before-' || n, 'status', 'active') END,
       jsonb_build_object('name', 'after-' || n, 'status', 'planned', 'custom_fields', jsonb_build_object('n', n)),
       (SELECT min(id) FROM public.django_content_type)
FROM generate_series(1, 400) AS n
ON CONFLICT (id) DO NOTHING;
