//! Who may do what to whom among a workspace's users: pure rules, checked by the
//! service on rows read under lock (see [`crate::store::users`]).

use super::{Role, User, UserAccess};
use crate::{Error, Result};

/// Whether `actor` (`None`: the app) may give `target` the role `role`, in a
/// workspace that has `owners` owners. Pure: the store calls it with the rows it
/// locked.
pub(crate) fn may_set_role(
    actor: Option<&User>,
    target: &User,
    role: Role,
    owners: usize,
) -> Result<()> {
    if let Some(a) = actor {
        if a.id == target.id {
            return Err(Error::Forbidden);
        }
        let owner_involved = target.role == Role::Owner || role == Role::Owner;
        if !a.role.is_admin() || (owner_involved && a.role != Role::Owner) {
            return Err(Error::Forbidden);
        }
    }
    let active_owner = target.role == Role::Owner && target.disabled_at.is_none();
    if active_owner && role != Role::Owner && owners <= 1 {
        return Err(last_owner());
    }
    Ok(())
}

/// Whether `actor` (`None`: the app) may apply `access` to `target`, in a workspace
/// that has `owners` owners who can sign in: the rules of roles (admins act on
/// members and admins, owners on everyone, members on nobody), nobody disables or
/// deletes themselves, and the last active owner is never disabled or deleted,
/// whoever asks. Pure: the store calls it with the rows it locked.
pub(crate) fn may_change_access(
    actor: Option<&User>,
    target: &User,
    access: UserAccess,
    owners: usize,
) -> Result<()> {
    if let Some(a) = actor {
        if a.id == target.id {
            // Anyone may sign themselves out everywhere; nobody disables or deletes
            // themselves.
            return if access == UserAccess::EndSessions {
                Ok(())
            } else {
                Err(Error::Forbidden)
            };
        }
        if !a.role.is_admin() || (target.role == Role::Owner && a.role != Role::Owner) {
            return Err(Error::Forbidden);
        }
    }
    let removes_owner = matches!(access, UserAccess::Disable | UserAccess::Delete)
        && target.role == Role::Owner
        && target.disabled_at.is_none();
    if removes_owner && owners <= 1 {
        return Err(last_owner());
    }
    Ok(())
}

/// Whether `actor` (`None`: the app) may lift `target`'s login lockout: the rules of
/// roles again (an owner's lock is an owner's business).
pub(crate) fn may_lift_lockout(actor: Option<&User>, target: &User) -> Result<()> {
    match actor {
        Some(a) if !a.role.is_admin() => Err(Error::Forbidden),
        Some(a) if target.role == Role::Owner && a.role != Role::Owner => Err(Error::Forbidden),
        _ => Ok(()),
    }
}

/// Whether `actor` (`None`: the app) may add a user with `role`.
pub(crate) fn may_create(actor: Option<&User>, role: Role) -> Result<()> {
    match actor {
        Some(a) if !a.role.is_admin() => Err(Error::Forbidden),
        Some(a) if role == Role::Owner && a.role != Role::Owner => Err(Error::Forbidden),
        _ => Ok(()),
    }
}

/// Whether `actor` (`None`: the app) may save or delete the workspace's
/// integration of a provider (its credentials): admins and owners, as for API keys
/// and webhooks — but only owners for a provider that sends the workspace's auth
/// mail (`sends_mail`): whoever controls that sender reads every password-reset
/// mail, an owner's too, and admins may not act on owners.
pub(crate) fn may_manage_integration(actor: Option<&User>, sends_mail: bool) -> Result<()> {
    match actor {
        Some(a) if !a.role.is_admin() => Err(Error::Forbidden),
        Some(a) if sends_mail && a.role != Role::Owner => Err(Error::Forbidden),
        _ => Ok(()),
    }
}

fn last_owner() -> Error {
    Error::Conflict {
        message: "a workspace keeps at least one owner: make another user owner first".into(),
        field: Some("role"),
        existing_id: None,
    }
}
