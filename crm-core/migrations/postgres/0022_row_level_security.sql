-- Row-level security, a second wall between tenants. This migration only creates
-- the policies; they bind nobody until the tables' owner turns row-level security
-- on (`crm migrate --row-level-security on`, Crm::set_row_level_security), and then
-- only roles that neither own the tables nor have BYPASSRLS. Every table with a
-- workspace_id, and crm_workspaces, gets the policy crm_tenant: a statement sees
-- and writes the rows of the workspace named by the setting crm.workspace_id,
-- every row when it is '*' (crm's own cross-workspace work), and nothing when it
-- is unset. crm sets it in every transaction when built with
-- row_level_security(true).
-- A later migration that adds a workspace-owned table adds its policy the same way,
-- and enables RLS on it when crm_leads has it on (a test checks every such table).
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'workspace_id' AND NOT a.attisdropped
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind = 'r'
          AND c.relname LIKE 'crm\_%'
    LOOP
        EXECUTE format(
            'CREATE POLICY crm_tenant ON %I '
            'USING (current_setting(''crm.workspace_id'', true) = ''*'' '
            'OR workspace_id::text = current_setting(''crm.workspace_id'', true)) '
            'WITH CHECK (current_setting(''crm.workspace_id'', true) = ''*'' '
            'OR workspace_id::text = current_setting(''crm.workspace_id'', true))',
            t);
    END LOOP;
END
$$;

CREATE POLICY crm_tenant ON crm_workspaces
    USING (current_setting('crm.workspace_id', true) = '*'
           OR id::text = current_setting('crm.workspace_id', true))
    WITH CHECK (current_setting('crm.workspace_id', true) = '*'
                OR id::text = current_setting('crm.workspace_id', true));
