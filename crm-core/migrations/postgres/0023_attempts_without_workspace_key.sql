-- The attempt log drops its foreign key to crm_workspaces. The dispatcher writes an
-- attempt row for every delivery, and the key's check ran a trigger and a key-share
-- lock of the workspace row for each of them: 31 against 20 us a row for 256-row
-- inserts (20,480 rows, this table's columns and indexes, Postgres 15). An attempt's
-- workspace is its job's, and crm_jobs keeps its key: no attempt is written for a
-- workspace that does not exist. What the key's ON DELETE CASCADE did, a workspace
-- deleted by hand leaves to housekeeping: its attempts go when they are older than
-- the attempt retention, as every attempt does. SQLite keeps the key (its check is
-- an index probe, and dropping it would rebuild the table).

ALTER TABLE crm_delivery_attempts DROP CONSTRAINT crm_delivery_attempts_workspace_id_fkey;
