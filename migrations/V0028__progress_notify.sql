-- Migration 0028: the change feed of live progress (sync-api's Server-Sent
-- Events, issue 14).
--
-- The API keeps ONE change feed per process, whatever the number of
-- subscribers: every ~100 ms it asks for the versions of the syncs someone is
-- subscribed to (sync_progress_versions, one statement), and reads a sync again
-- only when its version moved. On top of that a NOTIFY on completion lets the
-- final event go out at once.
--
-- Why not a NOTIFY on every tick: NOTIFY takes a database-wide lock while the
-- notifying transaction commits, so every progress tick of every tenant would be
-- serialised behind it. Completion happens once per sync: its NOTIFY costs the
-- writers nothing measurable. A sync's start is not notified: nobody can be
-- subscribed to a sync that does not exist yet (the subscription gets a 404).
--
-- Notifications carry nothing: channel `sync_progress_done`, EMPTY payload.
-- Any login may LISTEN on any channel, so a payload (even a row id) would tell
-- every login which syncs of every org complete. The feed treats a
-- notification as a hint to poll now (payload ignored, wake-ups rate-limited:
-- anyone may NOTIFY the channel too).
--
-- A completion never fails because of the NOTIFY: the notification queue is
-- shared by the whole cluster, and one listener idle in a transaction stops it
-- draining; once it is full, NOTIFY fails at COMMIT and would roll back the
-- completing UPDATE. So the trigger notifies only while the queue is less
-- than half full (pg_notification_queue_usage() < 0.5) and otherwise skips
-- it: the feed's poll (~100 ms) delivers the completion anyway. Built-ins are
-- schema-qualified (pg_catalog.) so nothing in the pinned search_path can
-- stand in for them.
--
-- The spec's triggers and counts are unchanged.

-- NOTIFY once, when completed_at goes from NULL to a value (completion,
-- failure, cancellation). The WHEN clause keeps the function out of every tick.
CREATE FUNCTION sync_progress_notify_done() RETURNS trigger
    LANGUAGE plpgsql
AS $fn$
BEGIN
    IF pg_catalog.pg_notification_queue_usage() < 0.5 THEN
        PERFORM pg_catalog.pg_notify('sync_progress_done', '');
    END IF;
    RETURN NULL;
END
$fn$;

-- The feed's poll: for the row ids the API's subscribers hold, each row's
-- version (updated_at in microseconds since the epoch) and whether it is
-- finished. SECURITY INVOKER: the caller's row-level security filters it, so
-- a tenant session gets answers for its own org's rows only (another org's id,
-- even a leaked one, gives no row). The feed therefore polls once per tenant
-- scope among its subscribers. It answers only with a timestamp and a flag:
-- never a count, a name or an org. At most 10000 ids per call.
CREATE FUNCTION sync_progress_versions(p_ids uuid[])
    RETURNS TABLE (id uuid, version bigint, finished boolean)
    LANGUAGE sql STABLE SECURITY INVOKER
AS $fn$
    SELECT p.id,
           (extract(epoch FROM p.updated_at) * 1000000)::bigint,
           p.completed_at IS NOT NULL
      FROM sync_progress p
     WHERE p.id = ANY (p_ids[1:10000])
$fn$;

-- Pinned search_path, pg_temp LAST (see 0024 and 0025: a caller's temporary
-- table must never stand in for ours inside a function).
DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION sync_progress_notify_done() '
                   'SET search_path = %I, pg_catalog, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION sync_progress_versions(uuid[]) '
                   'SET search_path = %I, pg_catalog, pg_temp', current_schema());
END
$pin$;

-- Privileges: REVOKE ... FROM PUBLIC is not enough where default privileges
-- grant functions to other roles (Supabase: ALTER DEFAULT PRIVILEGES IN SCHEMA
-- public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role). For each
-- function created here, revoke EXECUTE from every grantee but the owner
-- (PUBLIC included), then grant back only what is intended: the trigger
-- function to nobody (a trigger runs it without EXECUTE), the poll function to
-- sync_tenant.
REVOKE ALL ON FUNCTION sync_progress_notify_done() FROM PUBLIC;
REVOKE ALL ON FUNCTION sync_progress_versions(uuid[]) FROM PUBLIC;
DO $acl$
DECLARE
    g name;
BEGIN
    FOR g IN
        SELECT DISTINCT r.rolname
          FROM pg_proc p, aclexplode(p.proacl) a, pg_roles r
         WHERE p.oid = 'sync_progress_notify_done()'::regprocedure
           AND r.oid = a.grantee AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION sync_progress_notify_done() FROM %I', g);
    END LOOP;
    FOR g IN
        SELECT DISTINCT r.rolname
          FROM pg_proc p, aclexplode(p.proacl) a, pg_roles r
         WHERE p.oid = 'sync_progress_versions(uuid[])'::regprocedure
           AND r.oid = a.grantee AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION sync_progress_versions(uuid[]) FROM %I', g);
    END LOOP;
END
$acl$;
GRANT EXECUTE ON FUNCTION sync_progress_versions(uuid[]) TO sync_tenant;

COMMENT ON FUNCTION sync_progress_versions(uuid[]) IS
    'sync-api change feed: version (updated_at, µs) and finished flag of the given sync_progress ids.';

CREATE TRIGGER trg_sync_progress_60_notify_done
    AFTER UPDATE ON sync_progress
    FOR EACH ROW
    WHEN (OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)
    EXECUTE FUNCTION sync_progress_notify_done();
