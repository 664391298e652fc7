-- Migration 0001: the prerequisites that migration 0024 depends on.
--
-- Idempotent on purpose: on a database that already has these objects (a Neon or
-- Supabase-style database with its own `organization`, `auth.users_extended` and
-- `auth.uid()`), nothing of theirs is replaced or altered. Every object is created
-- only when it is missing. The only thing added to existing objects is what the
-- tenant role needs for 0024's policies to evaluate (USAGE on schema auth, SELECT
-- on auth.users_extended, EXECUTE on auth.uid()).
--
-- Objects:
--   organization            tenants (one row per customer organisation)
--   auth (schema)
--   auth.users_extended     application users, each belonging to one organization
--   auth.uid()              the calling user's id, from PostgREST/Supabase JWT claims
--   sync_tenant (role)      NOLOGIN role that tenant-scoped sessions switch to with
--                           SET LOCAL ROLE; row-level security applies to it.

CREATE TABLE IF NOT EXISTS organization (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE SCHEMA IF NOT EXISTS auth;

DO $prereq$
BEGIN
    IF to_regclass('auth.users_extended') IS NULL THEN
        CREATE TABLE auth.users_extended (
            id         uuid PRIMARY KEY,
            org_id     uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
            email      text,
            full_name  text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX users_extended_org_id_idx ON auth.users_extended (org_id);
        -- A tenant may read only its own user row (policy below, once auth.uid()
        -- exists): that is what the 0024 policies look up, and it keeps the user
        -- directory itself from leaking across orgs.
        ALTER TABLE auth.users_extended ENABLE ROW LEVEL SECURITY;
    END IF;
END
$prereq$;

-- auth.uid(): Supabase/PostgREST compatible. Reads `request.jwt.claim.sub` (the
-- legacy per-claim setting), else `request.jwt.claims ->> 'sub'`. An empty string
-- counts as unset (a GUC set with SET LOCAL reads back as '' after the transaction).
-- Returns NULL when no user is set, which makes every 0024 policy deny.
DO $prereq$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE PARALLEL SAFE
        AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
            )::uuid
        $fn$;
        COMMENT ON FUNCTION auth.uid() IS
            'Id of the calling user from request.jwt.claim.sub or request.jwt.claims->>''sub''; NULL when unset.';
    END IF;
END
$prereq$;

DO $prereq$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies
                   WHERE schemaname = 'auth' AND tablename = 'users_extended')
       AND EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'auth' AND c.relname = 'users_extended'
                     AND c.relrowsecurity) THEN
        CREATE POLICY users_extended_self_select ON auth.users_extended
            FOR SELECT USING (id = (SELECT auth.uid()));
    END IF;
END
$prereq$;

-- The tenant role. Roles are cluster-wide, so several databases (or several
-- replicas migrating at once) may race to create it: both "already exists"
-- outcomes are fine.
DO $prereq$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sync_tenant') THEN
        BEGIN
            CREATE ROLE sync_tenant NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- The role that applies migrations is the role services connect as: it must be
    -- able to SET ROLE sync_tenant. Superusers already can.
    IF NOT pg_has_role(current_user, 'sync_tenant', 'MEMBER') THEN
        EXECUTE format('GRANT sync_tenant TO %I', current_user);
    END IF;
END
$prereq$;

GRANT USAGE ON SCHEMA auth TO sync_tenant;
GRANT SELECT ON auth.users_extended TO sync_tenant;
GRANT EXECUTE ON FUNCTION auth.uid() TO sync_tenant;
