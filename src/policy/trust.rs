//! Who is trusted: by the config alone, or as Pagure reports the
//! project's committers and the groups' members.

use crate::config::Trust;
use crate::pagure::ProjectAcl;

/// Who may do what, as far as the config alone tells.
pub fn trusted_by_config(trust: &Trust, user: &str) -> bool {
    trust.users.iter().any(|u| u == user)
}

/// Whether Pagure must be asked (project committers, group members).
pub fn trust_needs_pagure(trust: &Trust) -> bool {
    trust.committers || !trust.groups.is_empty()
}

/// The project's committers: owner, admins and committers (users), admin
/// and commit groups. "collaborator" (commit to some branches only) and
/// "ticket" do not make anyone trusted.
pub fn committers(acl: &ProjectAcl) -> (Vec<String>, Vec<String>) {
    let users = [&acl.users.owner, &acl.users.admin, &acl.users.commit].into_iter().flatten().cloned().collect();
    let groups = [&acl.groups.admin, &acl.groups.commit].into_iter().flatten().cloned().collect();
    (users, groups)
}

/// The groups whose members decide whether a user is trusted.
pub fn groups_to_ask(trust: &Trust, acl: &ProjectAcl) -> Vec<String> {
    let mut groups = trust.groups.clone();
    if trust.committers {
        groups.extend(committers(acl).1);
    }
    groups.sort();
    groups.dedup();
    groups
}

pub fn trusted_by_pagure(trust: &Trust, user: &str, acl: &ProjectAcl, members_of_groups: &[String]) -> bool {
    trusted_by_config(trust, user) || (trust.committers && committers(acl).0.iter().any(|u| u == user)) || members_of_groups.iter().any(|m| m == user)
}
