-- The attempt log drops its foreign key to crm_workspaces. The dispatcher writes an
-- attempt row for every delivery, and the key's check ran a trigger and a key-share
-- lock of the workspace row for each of them: 31 against 20 us a row for 256-row
-- inserts (20,480 rows, this table's columns and indexes, Postgres 15). An
-- attempt's workspace is the one its job was queued for, and crm_jobs keeps its key.
-- What changes is only what a workspace deleted by hand (crm has no call that
-- deletes one) leaves behind: its attempt log stays, as does an attempt finished
-- after the delete, until housekeeping removes attempts older than the retention
-- it is given. SQLite keeps the key (its check is an index probe, and dropping it
-- would rebuild the table).

ALTER TABLE crm_delivery_attempts DROP CONSTRAINT crm_delivery_attempts_workspace_id_fkey;
