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
-- Notifications carry keys only: channel `sync_progress_done`, payload the
-- row's id (36 bytes, far under the 8000-byte limit). No tenant data.
--
-- The spec's triggers and counts are unchanged.

-- NOTIFY once, when completed_at goes from NULL to a value (completion,
-- failure, cancellation). The WHEN clause keeps the function out of every tick.
CREATE FUNCTION sync_progress_notify_done() RETURNS trigger
    LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM pg_notify('sync_progress_done', NEW.id::text);
    RETURN NULL;
END
$fn$;

-- The feed's poll: for the row ids the API's subscribers hold, each row's
-- version (updated_at in microseconds since the epoch) and whether it is
-- finished. SECURITY DEFINER so that one statement serves the subscribers of
-- every org (tenant sessions see only their own org's rows). It answers only
-- for ids the caller already has (random UUIDs it was shown after passing its
-- own org's row-level security), and only with a timestamp and a flag: never a
-- count, a name or an org. At most 10000 ids per call.
CREATE FUNCTION sync_progress_versions(p_ids uuid[])
    RETURNS TABLE (id uuid, version bigint, finished boolean)
    LANGUAGE sql STABLE SECURITY DEFINER
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

REVOKE ALL ON FUNCTION sync_progress_notify_done() FROM PUBLIC;
REVOKE ALL ON FUNCTION sync_progress_versions(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sync_progress_versions(uuid[]) TO sync_tenant;

COMMENT ON FUNCTION sync_progress_versions(uuid[]) IS
    'sync-api change feed: version (updated_at, µs) and finished flag of the given sync_progress ids.';

CREATE TRIGGER trg_sync_progress_60_notify_done
    AFTER UPDATE ON sync_progress
    FOR EACH ROW
    WHEN (OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)
    EXECUTE FUNCTION sync_progress_notify_done();
