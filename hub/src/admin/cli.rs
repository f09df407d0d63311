//! `hub admin ...` and `hub audit ...`: the same operations as the admin API, run on the
//! hub's machine against its database (for the first steps, and when the web is down).

use std::io::Write;

use anyhow::{bail, Context};
use clap::Subcommand;
use storage::accounts::{Grade, NewUser, Role, SiteKind, Specialty};
use storage::audit::{Action, EventType, Filter, NewEvent, Outcome};
use storage::Db;

/// `hub admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a site: `hub admin site-add township-a "城关镇卫生院" --kind township`.
    SiteAdd {
        /// Identifier (a-z, 0-9, '-').
        id: String,
        /// Display name.
        name: String,
        /// county or township.
        #[arg(long, default_value = "township")]
        kind: String,
    },
    /// List sites.
    Sites,
    /// Create a user; prints a generated password once unless --password-stdin.
    UserAdd {
        /// Login name.
        username: String,
        /// admin, technician, reader or clinician.
        #[arg(long)]
        role: String,
        /// Name shown on screens and reports (default: the login name).
        #[arg(long)]
        name: Option<String>,
        /// Reader specialty (radiology, cardiology, laboratory); repeat for several.
        #[arg(long = "specialty")]
        specialties: Vec<String>,
        /// Reader grade: junior or senior.
        #[arg(long)]
        grade: Option<String>,
        /// Site (technician: one; clinician: one or more).
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    Users,
    /// Set a new password (generated and printed once unless --password-stdin), unlock the
    /// account and end its sessions.
    ResetPassword {
        /// Login name.
        username: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (ends their sessions).
    Disable {
        /// Login name.
        username: String,
    },
    /// Re-enable a user.
    Enable {
        /// Login name.
        username: String,
    },
    /// End every session of a user.
    Logout {
        /// Login name.
        username: String,
    },
    /// Create a gateway key for a site; prints the key once.
    KeyCreate {
        /// The township site.
        #[arg(long)]
        site: String,
        /// Free text, e.g. the gateway machine.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List gateway keys (never the keys themselves).
    Keys,
    /// Revoke a gateway key by id.
    KeyRevoke {
        /// Key id.
        id: String,
    },
}

/// `hub audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; exits non-zero and names each bad event if it was altered.
    Verify,
    /// Write events as JSON lines to standard output.
    Export {
        /// Only this patient's.
        #[arg(long)]
        patient: Option<String>,
        /// Only this study's.
        #[arg(long)]
        study: Option<String>,
        /// Only this exam's.
        #[arg(long)]
        exam: Option<i64>,
        /// Only this actor's (e.g. user:alice).
        #[arg(long)]
        actor: Option<String>,
        /// From this time, ms since the epoch.
        #[arg(long)]
        from: Option<i64>,
        /// Before this time, ms since the epoch.
        #[arg(long)]
        to: Option<i64>,
    },
}

fn cli_actor(event: EventType, action: Action) -> NewEvent {
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    NewEvent::new(
        event,
        action,
        Outcome::Success,
        format!("cli:{who}"),
        "admin",
    )
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn parse<T>(what: &str, value: &str, parse: fn(&str) -> Option<T>) -> anyhow::Result<T> {
    match parse(value) {
        Some(v) => Ok(v),
        None => bail!("unknown {what} {value:?}"),
    }
}

/// Run an admin command.
pub async fn admin(db: &Db, command: AdminCommand) -> anyhow::Result<()> {
    let by = cli_actor(EventType::USER_SECURITY_ATTRIBUTES_CHANGED, Action::Update);
    let mut out = std::io::stdout().lock();
    match command {
        AdminCommand::SiteAdd { id, name, kind } => {
            let kind = parse("site kind", &kind, SiteKind::parse)?;
            let site = super::add_site(db, &by, &id, &name, kind).await?;
            writeln!(out, "site {} ({}) created", site.id, site.kind)?;
        }
        AdminCommand::Sites => {
            for s in storage::accounts::list_sites(db).await? {
                writeln!(out, "{}\t{}\t{}", s.id, s.kind, s.name)?;
            }
        }
        AdminCommand::UserAdd {
            username,
            role,
            name,
            specialties,
            grade,
            sites,
            password_stdin,
        } => {
            let new = NewUser {
                display_name: name.unwrap_or_else(|| username.clone()),
                username,
                role: parse("role", &role, Role::parse)?,
                specialties: specialties
                    .iter()
                    .map(|s| parse("specialty", s, Specialty::parse))
                    .collect::<anyhow::Result<_>>()?,
                grade: grade
                    .as_deref()
                    .map(|g| parse("grade", g, Grade::parse))
                    .transpose()?,
                sites,
            };
            let password = password_stdin.then(read_password).transpose()?;
            let (user, generated) = super::add_user(db, &by, &new, password).await?;
            writeln!(out, "user {} ({}) created", user.username, user.role)?;
            if let Some(p) = generated {
                writeln!(out, "password (shown once): {p}")?;
            }
        }
        AdminCommand::Users => {
            for u in storage::accounts::list_users(db).await? {
                let specialties: Vec<&str> = u.specialties.iter().map(|s| s.as_str()).collect();
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}{}",
                    u.username,
                    u.role,
                    specialties.join(","),
                    u.grade.map(|g| g.as_str()).unwrap_or("-"),
                    u.sites.join(","),
                    if u.disabled { "\tdisabled" } else { "" }
                )?;
            }
        }
        AdminCommand::ResetPassword {
            username,
            password_stdin,
        } => {
            let password = password_stdin.then(read_password).transpose()?;
            let generated = super::reset_password(db, &by, &username, password).await?;
            writeln!(out, "password of {username} reset; sessions ended")?;
            if let Some(p) = generated {
                writeln!(out, "password (shown once): {p}")?;
            }
        }
        AdminCommand::Disable { username } => {
            super::set_disabled(db, &by, &username, true).await?;
            writeln!(out, "{username} disabled")?;
        }
        AdminCommand::Enable { username } => {
            super::set_disabled(db, &by, &username, false).await?;
            writeln!(out, "{username} enabled")?;
        }
        AdminCommand::Logout { username } => {
            let n = super::revoke_sessions(db, &by, &username).await?;
            writeln!(out, "{n} sessions of {username} ended")?;
        }
        AdminCommand::KeyCreate { site, label } => {
            let (stored, key) = super::create_gateway_key(db, &by, &site, &label).await?;
            writeln!(
                out,
                "gateway key {} for site {} created",
                stored.id, stored.site_id
            )?;
            writeln!(
                out,
                "key (shown once; put it in the gateway's hub_key): {key}"
            )?;
        }
        AdminCommand::Keys => {
            for k in storage::sessions::list_gateway_keys(db).await? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                writeln!(out, "{}\t{}\t{}\t{}", k.id, k.site_id, state, k.label)?;
            }
        }
        AdminCommand::KeyRevoke { id } => {
            super::revoke_gateway_key(db, &by, &id).await?;
            writeln!(out, "gateway key {id} revoked")?;
        }
    }
    Ok(())
}

/// Run an audit command. Returns whether the chain is intact (verify) or true.
pub async fn audit(db: &Db, command: AuditCommand) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match command {
        AuditCommand::Verify => {
            let report = storage::audit::verify(db).await?;
            let used = NewEvent {
                detail: Some(
                    serde_json::json!({ "verify": report.is_intact(), "checked": report.checked }),
                ),
                ..cli_actor(EventType::AUDIT_LOG_USED, Action::Execute)
            };
            for p in &report.problems {
                writeln!(out, "event {}: {:?}: {}", p.seq, p.kind, p.message)?;
            }
            if report.is_intact() {
                writeln!(
                    out,
                    "audit trail intact: {} events, head {} {}",
                    report.checked, report.head_seq, report.head_hash
                )?;
            } else {
                writeln!(
                    out,
                    "audit trail ALTERED: {} problem(s) in {} events",
                    report.problems_total, report.checked
                )?;
            }
            storage::audit::append(db, &used).await?;
            Ok(report.is_intact())
        }
        AuditCommand::Export {
            patient,
            study,
            exam,
            actor,
            from,
            to,
        } => {
            let mut filter = Filter {
                patient_id: patient.clone(),
                study_uid: study.clone(),
                exam_id: exam,
                actor: actor.clone(),
                from_ms: from,
                to_ms: to,
                after_seq: None,
                limit: storage::audit::MAX_LIST_LIMIT,
            };
            let mut exported = 0usize;
            loop {
                let page = storage::audit::list(db, &filter).await?;
                for e in &page {
                    serde_json::to_writer(&mut out, e)?;
                    out.write_all(b"\n")?;
                }
                exported += page.len();
                match page.last() {
                    Some(last) if page.len() as i64 == filter.limit => {
                        filter.after_seq = Some(last.seq)
                    }
                    _ => break,
                }
            }
            let used = NewEvent {
                patient_id: patient,
                study_uid: study,
                exam_id: exam,
                detail: Some(
                    serde_json::json!({ "export": exported, "actor": actor, "from": from, "to": to }),
                ),
                ..cli_actor(EventType::EXPORT, Action::Read)
            };
            storage::audit::append(db, &used).await?;
            Ok(true)
        }
    }
}
