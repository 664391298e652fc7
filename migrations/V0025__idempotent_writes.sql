-- Migration 0025: idempotency keys for the hot writes, so that a write whose
-- outcome is unknown (the connection was lost after the statement or COMMIT
-- was sent) can be retried without being applied twice.
--
-- Depends on 0024. The exact inverse is rollback/0025_idempotent_writes.sql.
--
--   * sync_progress_tick_key: one row per applied progress tick key of a running
--     sync. A keyed tick inserts its key (ON CONFLICT DO NOTHING) and updates the
--     counts in the same statement, only when the key was new: a repeated key is
--     a no-op, distinct keys all apply, in any order. The keys of a sync are
--     deleted when the sync finishes (trigger trg_sync_progress_50_prune_tick_keys)
--     and with the sync (foreign key, ON DELETE CASCADE).
--   * sync_activity_batch: one row per applied bulk (COPY) batch of activity rows,
--     written in the transaction of the COPY: a retried batch is a no-op.
--   * Single log rows need no table: the caller supplies id and created_at (the
--     primary key of the partitioned log) and the insert is ON CONFLICT DO NOTHING.

CREATE TABLE sync_progress_tick_key (
    org_id    uuid         NOT NULL,
    sync_id   varchar(255) NOT NULL,
    tick_key  bigint       NOT NULL,
    CONSTRAINT sync_progress_tick_key_pkey PRIMARY KEY (org_id, sync_id, tick_key),
    CONSTRAINT sync_progress_tick_key_sync_fkey FOREIGN KEY (org_id, sync_id)
        REFERENCES sync_progress (org_id, sync_id) ON DELETE CASCADE
);

COMMENT ON TABLE sync_progress_tick_key IS
    'Idempotency keys of the progress ticks applied to a running sync; deleted when the sync finishes.';

CREATE TABLE sync_activity_batch (
    org_id     uuid        NOT NULL,
    batch_key  uuid        NOT NULL,
    row_count  integer     NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sync_activity_batch_pkey PRIMARY KEY (org_id, batch_key),
    CONSTRAINT sync_activity_batch_org_id_fkey FOREIGN KEY (org_id)
        REFERENCES organization (id) ON DELETE CASCADE,
    CONSTRAINT sync_activity_batch_row_count_non_negative CHECK (row_count >= 0)
);

COMMENT ON TABLE sync_activity_batch IS
    'Idempotency keys of the bulk (COPY) activity batches applied, with their row counts.';

-- Serves pruning by age (DELETE … WHERE applied_at < …).
CREATE INDEX sync_activity_batch_applied_at_idx ON sync_activity_batch (applied_at);

-- Deletes the tick keys of a sync when it finishes: a finished sync accepts no
-- tick, so its keys are no longer needed. SECURITY DEFINER (the owner of the
-- tables, which bypasses row-level security) so that a tenant completing its
-- own sync needs no DELETE privilege on the key table. Its search_path is
-- pinned below with pg_temp LAST: with pg_temp first (the default, and what
-- `SET search_path FROM CURRENT` keeps), a caller's temporary table named
-- sync_progress_tick_key, with a trigger of the caller's, would run the
-- caller's code as the owner.
CREATE FUNCTION sync_progress_prune_tick_keys() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
    DELETE FROM sync_progress_tick_key
     WHERE org_id = NEW.org_id AND sync_id = NEW.sync_id;
    RETURN NULL;
END
$fn$;

DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION sync_progress_prune_tick_keys() '
                   'SET search_path = %I, pg_catalog, pg_temp', current_schema());
END
$pin$;

REVOKE ALL ON FUNCTION sync_progress_prune_tick_keys() FROM PUBLIC;

CREATE TRIGGER trg_sync_progress_50_prune_tick_keys
    AFTER UPDATE ON sync_progress
    FOR EACH ROW
    WHEN (OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)
    EXECUTE FUNCTION sync_progress_prune_tick_keys();

-- Row-level security: 4 policies per table; reads and inserts org-scoped, updates
-- and deletes closed to every non-owner (as on 0024's activity log).
DO $rls$
DECLARE
    t text;
    org_check text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sync_progress_tick_key', 'sync_activity_batch'] LOOP
        org_check := format(
            'EXISTS (SELECT 1 FROM auth.users_extended u '
            'WHERE u.id = (SELECT auth.uid()) AND u.org_id = %I.org_id)', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT USING (%s)',
                       t || '_select', t, org_check);
        EXECUTE format('CREATE POLICY %I ON %I FOR INSERT WITH CHECK (%s)',
                       t || '_insert', t, org_check);
        -- A key, once written, is what makes a retry a no-op: no non-owner may
        -- change or remove one (pruning runs as the owner, SECURITY DEFINER).
        EXECUTE format('CREATE POLICY %I ON %I FOR UPDATE USING (false) WITH CHECK (false)',
                       t || '_update', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR DELETE USING (false)',
                       t || '_delete', t);
        -- RLS does not cover TRUNCATE: the guard of 0024 refuses it to non-owners.
        EXECUTE format('CREATE TRIGGER trg_%s_10_no_truncate BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate()', t, t);
    END LOOP;
END
$rls$;

-- Tenant sessions tick their own syncs with keys (the policies keep them to
-- their org; the foreign key to their org's sync). Bulk batches are
-- service-scope only: no grant.
GRANT SELECT, INSERT ON sync_progress_tick_key TO sync_tenant;

-- As for 0024's tables: TRIGGER, TRUNCATE and REFERENCES back from every role but
-- the owner (default privileges hand them out at CREATE TABLE).
DO $revoke$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT c.oid::regclass AS rel,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid IN ('sync_progress_tick_key'::regclass, 'sync_activity_batch'::regclass)
           AND a.grantee <> c.relowner
           AND a.privilege_type IN ('TRIGGER', 'TRUNCATE', 'REFERENCES')
    LOOP
        EXECUTE format('REVOKE TRIGGER, TRUNCATE, REFERENCES ON TABLE %s FROM %s', r.rel, r.grantee);
    END LOOP;
END
$revoke$;
