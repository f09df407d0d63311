//! The authorization rules, all of them, in one place.
//!
//! Every request passes [`crate::guard`], which names the route family of the request
//! ([`family_of`]) and asks [`permits`] whether the caller's role may use it. Handlers
//! then read and write only through [`read_scope`] and [`store_site`], which say which
//! sites and exam kinds the caller reaches. A read outside the scope answers 404, like a
//! missing exam, so another site's data cannot even be seen to exist.

use actix_web::http::Method;
use storage::accounts::{Grade, Role, Specialty, User};
use storage::exams::ExamKind;
use storage::scope::ReadScope;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A logged-in person.
    User(User),
    /// A township gateway, by its key.
    Gateway {
        /// Key id (public part of the key).
        key_id: String,
        /// The site the key belongs to.
        site: String,
    },
}

impl Principal {
    /// How audit records name the caller: `user:<name>` or `gateway:<key id>`.
    pub fn actor(&self) -> String {
        match self {
            Principal::User(u) => format!("user:{}", u.username),
            Principal::Gateway { key_id, .. } => format!("gateway:{key_id}"),
        }
    }

    /// Role name for audit records.
    pub fn role_name(&self) -> &'static str {
        match self {
            Principal::User(u) => u.role.as_str(),
            Principal::Gateway { .. } => "gateway",
        }
    }

    /// The site the caller acts for, when there is exactly one.
    pub fn home_site(&self) -> Option<&str> {
        match self {
            Principal::User(u) if u.sites.len() == 1 => Some(&u.sites[0]),
            Principal::User(_) => None,
            Principal::Gateway { site, .. } => Some(site),
        }
    }

    fn role(&self) -> Option<Role> {
        match self {
            Principal::User(u) => Some(u.role),
            Principal::Gateway { .. } => None,
        }
    }
}

/// Families of routes that share one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Open to everybody: health check, login, the web UI's static files.
    Public,
    /// The caller's own session: who am I, logout.
    Session,
    /// DICOMweb QIDO-RS / WADO-RS.
    DicomwebRead,
    /// DICOMweb STOW-RS.
    DicomwebWrite,
    /// Gateway notices (study complete).
    Ingest,
    /// Exams and the worklist.
    Worklist,
    /// Reports.
    Reports,
    /// Sites, accounts, keys, audit trail.
    Admin,
    /// A township gateway fetching its site's signed reports.
    Delivery,
    /// Anything else: authentication required, then the router answers (404).
    Other,
}

/// The family of a request.
pub fn family_of(method: &Method, path: &str) -> Family {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if path == "/healthz"
        || path == "/api/auth/login"
        || path == "/api/signing-keys"
        || under("/ui")
        || path == "/"
    {
        Family::Public
    } else if under("/api/auth") {
        Family::Session
    } else if under("/dicomweb") {
        if method == Method::GET || method == Method::HEAD {
            Family::DicomwebRead
        } else {
            Family::DicomwebWrite
        }
    } else if under("/ingest") {
        Family::Ingest
    } else if under("/api/exams") || under("/api/worklist") {
        Family::Worklist
    } else if under("/api/reports") || under("/api/templates") {
        Family::Reports
    } else if under("/api/delivery") {
        Family::Delivery
    } else if under("/api/admin") {
        Family::Admin
    } else {
        Family::Other
    }
}

/// May this caller use routes of this family at all?
pub fn permits(principal: &Principal, family: Family) -> bool {
    use Role::*;
    let role = principal.role();
    match family {
        Family::Public | Family::Other => true,
        Family::Session => role.is_some(),
        Family::DicomwebRead => matches!(role, Some(Technician | Reader | Clinician)),
        // Gateways store for their site; a technician may upload by hand for theirs.
        Family::DicomwebWrite => matches!(role, None | Some(Technician)),
        Family::Ingest => role.is_none(),
        Family::Worklist => matches!(role, Some(Technician | Reader | Clinician)),
        // Gateways fetch their site's signed reports.
        Family::Reports => matches!(role, None | Some(Technician | Reader | Clinician)),
        Family::Admin => role == Some(Admin),
        Family::Delivery => role.is_none(),
    }
}

/// The statuses in which the caller may claim an exam of this kind: readers of the
/// specialty claim what is ready; seniors also claim preliminaries to review them.
pub fn claimable_statuses(principal: &Principal, kind: ExamKind) -> &'static [&'static str] {
    match principal {
        Principal::User(u)
            if u.role == Role::Reader && u.specialties.iter().any(|s| kinds_of(*s) == kind) =>
        {
            match u.grade {
                Some(Grade::Senior) => &["ready", "preliminary"],
                _ => &["ready"],
            }
        }
        _ => &[],
    }
}

/// May the caller amend a signed report of this kind? (Senior readers of the specialty.)
pub fn may_amend(principal: &Principal, kind: ExamKind) -> bool {
    claimable_statuses(principal, kind).contains(&"preliminary")
}

/// Is the caller an administrator?
pub fn is_admin(principal: &Principal) -> bool {
    matches!(principal, Principal::User(u) if u.role == Role::Admin)
}

/// Which signed reports the caller may read: as [`read_scope`], and a gateway its site's.
pub fn report_scope(principal: &Principal) -> ReadScope {
    match principal {
        Principal::Gateway { site, .. } => ReadScope {
            sites: Some(vec![site.clone()]),
            kinds: None,
        },
        other => read_scope(other),
    }
}

/// The exam kinds a specialty reads.
pub fn kinds_of(specialty: Specialty) -> ExamKind {
    match specialty {
        Specialty::Radiology => ExamKind::Imaging,
        Specialty::Cardiology => ExamKind::Ecg,
        Specialty::Laboratory => ExamKind::Lab,
    }
}

/// Which patient data the caller may read.
pub fn read_scope(principal: &Principal) -> ReadScope {
    match principal {
        Principal::User(u) => match u.role {
            // Township staff and clinicians: everything of their own sites.
            Role::Technician | Role::Clinician => ReadScope {
                sites: Some(u.sites.clone()),
                kinds: None,
            },
            // County readers: their specialties, from every site.
            Role::Reader => ReadScope {
                sites: None,
                kinds: Some(u.specialties.iter().copied().map(kinds_of).collect()),
            },
            // Administrators manage accounts; they do not browse patients.
            Role::Admin => ReadScope::nothing(),
        },
        Principal::Gateway { .. } => ReadScope::nothing(),
    }
}

/// The site the caller may store data into, if any.
pub fn store_site(principal: &Principal) -> Option<&str> {
    match principal {
        Principal::Gateway { site, .. } => Some(site),
        Principal::User(u) if u.role == Role::Technician => u.sites.first().map(String::as_str),
        Principal::User(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, sites: &[&str], specialties: &[Specialty]) -> Principal {
        Principal::User(User {
            id: 1,
            username: "u".into(),
            display_name: "U".into(),
            role,
            specialties: specialties.to_vec(),
            grade: (role == Role::Reader).then_some(Grade::Senior),
            sites: sites.iter().map(|s| s.to_string()).collect(),
            disabled: false,
        })
    }

    #[test]
    fn families_from_paths() {
        assert_eq!(family_of(&Method::GET, "/healthz"), Family::Public);
        assert_eq!(family_of(&Method::POST, "/api/auth/login"), Family::Public);
        assert_eq!(
            family_of(&Method::POST, "/api/auth/logout"),
            Family::Session
        );
        assert_eq!(
            family_of(&Method::GET, "/dicomweb/studies"),
            Family::DicomwebRead
        );
        assert_eq!(
            family_of(&Method::POST, "/dicomweb/studies"),
            Family::DicomwebWrite
        );
        assert_eq!(family_of(&Method::GET, "/dicomwebX"), Family::Other);
        assert_eq!(family_of(&Method::GET, "/api/admin/users"), Family::Admin);
        assert_eq!(family_of(&Method::GET, "/api/exams"), Family::Worklist);
    }

    #[test]
    fn readers_see_their_specialties_everywhere() {
        let r = user(Role::Reader, &[], &[Specialty::Cardiology]);
        assert_eq!(
            read_scope(&r),
            ReadScope {
                sites: None,
                kinds: Some(vec![ExamKind::Ecg])
            }
        );
        assert!(!permits(&r, Family::DicomwebWrite));
        assert!(store_site(&r).is_none());
    }

    #[test]
    fn gateways_store_only() {
        let g = Principal::Gateway {
            key_id: "k".into(),
            site: "a".into(),
        };
        assert!(permits(&g, Family::DicomwebWrite));
        assert!(permits(&g, Family::Ingest));
        assert!(!permits(&g, Family::DicomwebRead));
        assert!(!permits(&g, Family::Admin));
        assert_eq!(store_site(&g), Some("a"));
        assert_eq!(read_scope(&g), ReadScope::nothing());
    }

    #[test]
    fn township_staff_stay_home() {
        let t = user(Role::Technician, &["a"], &[]);
        assert_eq!(read_scope(&t).sites, Some(vec!["a".to_string()]));
        assert_eq!(store_site(&t), Some("a"));
        let c = user(Role::Clinician, &["a", "b"], &[]);
        assert_eq!(read_scope(&c).sites.map(|s| s.len()), Some(2));
        assert!(!permits(&c, Family::DicomwebWrite));
        assert!(!permits(&user(Role::Admin, &[], &[]), Family::DicomwebRead));
    }
}
