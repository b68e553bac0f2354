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

/// Why `user` is not trusted on `project`, for the INFO line of a refusal.
pub fn why_not_trusted(trust: &Trust, project: &str, user: &str) -> String {
    let mut ways = vec!["not in trusted.users".to_string()];
    if trust.committers {
        ways.push(format!("not an owner, admin or committer of {project} (nor in a group with such access)"));
    }
    if !trust.groups.is_empty() {
        ways.push(format!("not in the trusted groups ({})", trust.groups.join(", ")));
    }
    if trust_needs_pagure(trust) {
        ways.push("as Pagure says now".to_string());
    }
    format!("{user} is not trusted: {}", ways.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_trusted() {
        let project = serde_json::json!({
            "access_users": {"owner": ["ralph"], "admin": ["ann"], "commit": ["cid"], "collaborator": ["col"], "ticket": ["tim"]},
            "access_groups": {"admin": ["admins"], "commit": [], "ticket": ["triagers"]},
        });
        let acl: crate::pagure::ProjectAcl = serde_json::from_value(project).unwrap();
        assert_eq!(committers(&acl), (vec!["ralph".into(), "ann".into(), "cid".into()], vec!["admins".into()]));
        let trust = Trust { users: vec!["alice".into()], groups: vec!["qa".into()], committers: true };
        assert_eq!(groups_to_ask(&trust, &acl), ["admins", "qa"]);
        for user in ["alice", "ralph", "ann", "cid", "gus"] {
            assert!(trusted_by_pagure(&trust, user, &acl, &["gus".into()]), "{user}");
        }
        for user in ["col", "tim", "mallory"] {
            assert!(!trusted_by_pagure(&trust, user, &acl, &["gus".into()]), "{user}");
        }
        let no_committers = Trust { committers: false, ..trust };
        assert!(!trusted_by_pagure(&no_committers, "ralph", &acl, &[]));
    }
}
