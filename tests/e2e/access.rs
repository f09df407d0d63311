//! Who may see what: every route family with every role and site, tokens and logins,
//! the audit trail and its tamper evidence, the first start and `hub admin`.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage::accounts::{Grade, Role, Specialty};
use tests::accounts::{create_user, person, reader, session_for, PASSWORD};
use tests::{attr, call, stow, stow_as, Backend, Env, Hub};

use crate::{make_study, on_both_backends};

on_both_backends!(
    every_route_family_with_every_role_and_site,
    tokens_logins_and_secrets,
    audit_trail_records_reads_and_detects_tampering,
    audit_names_the_client_behind_a_trusted_proxy,
    first_start_and_admin_commands,
    admin_bodies_change_only_what_they_name
);

/// Study Instance UIDs in a QIDO answer.
fn study_uids(body: &Value) -> BTreeSet<String> {
    body.as_array()
        .map(|a| a.iter().filter_map(|s| attr(s, "0020000D")).collect())
        .unwrap_or_default()
}

fn read_all(files: &[std::path::PathBuf]) -> Result<Vec<Vec<u8>>> {
    files.iter().map(|f| Ok(std::fs::read(f)?)).collect()
}

pub async fn every_route_family_with_every_role_and_site(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let acc = env.accounts()?;

    // Township A sends a CT and an ECG, township B a CT.
    let a_ct = make_study(&env, "a-ct", 2, "access-a-ct", &[]);
    let a_ecg = make_study(&env, "a-ecg", 1, "access-a-ecg", &["--modality", "ECG"]);
    let b_ct = make_study(&env, "b-ct", 1, "access-b-ct", &[]);
    for (site, files) in [
        ("township-a", &a_ct),
        ("township-a", &a_ecg),
        ("township-b", &b_ct),
    ] {
        let (status, body) = stow(&hub.url, Some(site), &read_all(files)?).await?;
        ensure!(status == 200, "seed {site}: {status} {body}");
    }
    let (a, e, b) = (
        tests::study_uid_of(&a_ct[0])?,
        tests::study_uid_of(&a_ecg[0])?,
        tests::study_uid_of(&b_ct[0])?,
    );

    let storage = env.storage().await?;
    let db = &storage.db;
    let tech_a = create_user(db, &person("tech-a", Role::Technician, &["township-a"])).await?;
    let tech_b = create_user(db, &person("tech-b", Role::Technician, &["township-b"])).await?;
    let clin_b = create_user(db, &person("clin-b", Role::Clinician, &["township-b"])).await?;
    let clin_ab = create_user(
        db,
        &person("clin-ab", Role::Clinician, &["township-a", "township-b"]),
    )
    .await?;
    let rad = create_user(db, &reader("rad", &[Specialty::Radiology], Grade::Junior)).await?;
    let card = create_user(db, &reader("card", &[Specialty::Cardiology], Grade::Senior)).await?;
    let ids: Vec<(&str, Option<&str>)> = vec![
        ("anonymous", None),
        ("admin", Some(&acc.admin)),
        ("gateway-a", Some(acc.key("township-a")?)),
        ("gateway-b", Some(acc.key("township-b")?)),
        ("tech-a", Some(&tech_a)),
        ("tech-b", Some(&tech_b)),
        ("clin-b", Some(&clin_b)),
        ("clin-ab", Some(&clin_ab)),
        ("rad", Some(&rad)),
        ("card", Some(&card)),
    ];
    let token = |name: &str| ids.iter().find(|(n, _)| *n == name).and_then(|(_, t)| *t);
    let dw = hub.dicomweb();
    let set = |uids: &[&String]| uids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    // DICOMweb search: each caller finds exactly what is theirs.
    let searches: Vec<(&str, u16, BTreeSet<String>)> = vec![
        ("anonymous", 401, set(&[])),
        ("admin", 403, set(&[])),
        ("gateway-a", 403, set(&[])),
        ("tech-a", 200, set(&[&a, &e])),
        ("tech-b", 200, set(&[&b])),
        ("clin-b", 200, set(&[&b])),
        ("clin-ab", 200, set(&[&a, &e, &b])),
        ("rad", 200, set(&[&a, &b])),
        ("card", 200, set(&[&e])),
    ];
    for (who, want_status, want) in &searches {
        let (status, body) = call(Method::GET, &format!("{dw}/studies"), token(who), None).await?;
        ensure!(
            status.as_u16() == *want_status,
            "QIDO as {who}: {status} {body}"
        );
        if status == StatusCode::OK {
            ensure!(
                study_uids(&body) == *want,
                "QIDO as {who} found {:?}",
                study_uids(&body)
            );
        }
    }

    // Reads, writes, notices, worklist, reports and admin routes: the expected status
    // for each caller. 404 = another site's or another specialty's data, as if absent.
    // A third instance of A's study (the first two regenerate identical).
    let a_one = read_all(&make_study(&env, "a-more", 3, "access-a-ct", &[])[2..])?;
    type Row<'a> = (&'a str, Method, String, Option<Value>, Vec<(&'a str, u16)>);
    let table: Vec<Row> = vec![
        (
            "WADO metadata of A's CT",
            Method::GET,
            format!("{dw}/studies/{a}/metadata"),
            None,
            vec![
                ("anonymous", 401),
                ("admin", 403),
                ("gateway-a", 403),
                ("tech-a", 200),
                ("tech-b", 404),
                ("clin-b", 404),
                ("clin-ab", 200),
                ("rad", 200),
                ("card", 404),
            ],
        ),
        (
            "WADO retrieve of A's ECG",
            Method::GET,
            format!("{dw}/studies/{e}"),
            None,
            vec![
                ("anonymous", 401),
                ("gateway-a", 403),
                ("tech-a", 200),
                ("tech-b", 404),
                ("rad", 404),
                ("card", 200),
            ],
        ),
        (
            "QIDO series of B's CT",
            Method::GET,
            format!("{dw}/studies/{b}/series"),
            None,
            vec![("anonymous", 401), ("tech-b", 200), ("rad", 200)],
        ),
        (
            "study complete notice for A",
            Method::POST,
            format!("{}/ingest/studies/{a}/complete", hub.url),
            Some(json!({"priority": "routine", "instance_count": 2})),
            vec![
                ("anonymous", 401),
                ("admin", 403),
                ("tech-a", 403),
                ("rad", 403),
                ("gateway-b", 404),
                ("gateway-a", 200),
            ],
        ),
        (
            "worklist",
            Method::GET,
            format!("{}/api/exams", hub.url),
            None,
            vec![
                ("anonymous", 401),
                ("admin", 403),
                ("gateway-a", 403),
                ("tech-a", 200),
                ("rad", 200),
                ("clin-b", 200),
            ],
        ),
        (
            "reports list",
            Method::GET,
            format!("{}/api/reports", hub.url),
            None,
            vec![
                ("anonymous", 401),
                ("admin", 403),
                ("rad", 200),
                ("clin-b", 200),
                ("gateway-a", 200),
            ],
        ),
        (
            "delivery outbox",
            Method::GET,
            format!("{}/api/delivery?after=0&wait=0", hub.url),
            None,
            vec![
                ("anonymous", 401),
                ("admin", 403),
                ("rad", 403),
                ("tech-a", 403),
                ("gateway-a", 200),
            ],
        ),
        (
            "published signing keys",
            Method::GET,
            format!("{}/api/signing-keys", hub.url),
            None,
            vec![("anonymous", 200), ("rad", 200)],
        ),
        (
            "turnaround",
            Method::GET,
            format!("{}/api/admin/turnaround?from=0&to=1", hub.url),
            None,
            vec![
                ("anonymous", 401),
                ("rad", 403),
                ("gateway-a", 403),
                ("admin", 200),
            ],
        ),
        (
            "admin: list users",
            Method::GET,
            format!("{}/api/admin/users", hub.url),
            None,
            vec![
                ("anonymous", 401),
                ("admin", 200),
                ("gateway-a", 403),
                ("tech-a", 403),
                ("rad", 403),
                ("clin-ab", 403),
            ],
        ),
        (
            "admin: create a site",
            Method::POST,
            format!("{}/api/admin/sites", hub.url),
            Some(json!({"id": "township-c", "name": "C", "kind": "township"})),
            vec![
                ("anonymous", 401),
                ("rad", 403),
                ("gateway-a", 403),
                ("admin", 201),
            ],
        ),
        (
            "own session",
            Method::GET,
            format!("{}/api/auth/me", hub.url),
            None,
            vec![
                ("anonymous", 401),
                ("gateway-a", 403),
                ("tech-a", 200),
                ("admin", 200),
            ],
        ),
    ];
    for (what, method, url, body, expect) in &table {
        for (who, want) in expect {
            let (status, answer) = call(method.clone(), url, token(who), body.clone()).await?;
            ensure!(
                status.as_u16() == *want,
                "{what} as {who}: {status} (want {want}) {answer}"
            );
        }
    }

    // Worklist rows are scoped like searches.
    for (who, want) in [
        ("tech-a", set(&[&a, &e])),
        ("tech-b", set(&[&b])),
        ("card", set(&[&e])),
    ] {
        let (_, body) = call(
            Method::GET,
            &format!("{}/api/exams", hub.url),
            token(who),
            None,
        )
        .await?;
        let got: BTreeSet<String> = body
            .as_array()
            .context("exam list")?
            .iter()
            .filter_map(|x| x["study_uid"].as_str().map(str::to_string))
            .collect();
        ensure!(got == want, "worklist of {who}: {got:?}");
    }

    // Storing: gateways and technicians for their own site only.
    for (who, want) in [
        ("anonymous", 401),
        ("admin", 403),
        ("rad", 403),
        ("clin-ab", 403),
        ("tech-b", 200),
    ] {
        let files = read_all(&make_study(
            &env,
            &format!("s-{who}"),
            1,
            &format!("store-{who}"),
            &[],
        ))?;
        let (status, body) = stow_as(&hub.url, token(who), &files).await?;
        ensure!(status == want, "STOW as {who}: {status} {body}");
    }
    // Township B's gateway cannot add an instance to township A's study.
    let (status, body) = stow_as(&hub.url, token("gateway-b"), &a_one).await?;
    ensure!(status == 409, "gateway-b into A's study: {status} {body}");
    let (status, body) = stow_as(&hub.url, token("gateway-a"), &a_one).await?;
    ensure!(status == 200, "gateway-a into A's study: {status} {body}");
    Ok(())
}

pub async fn tokens_logins_and_secrets(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let storage = env.storage().await?;
    let db = &storage.db;
    let me = format!("{}/api/auth/me", hub.url);
    let mut secrets: Vec<String> = vec![PASSWORD.to_string()];

    // Expired, revoked and malformed credentials.
    let tech = create_user(db, &person("tech", Role::Technician, &["township-a"])).await?;
    secrets.push(tech.clone());
    let user = storage::accounts::login_record_by_name(db, "tech")
        .await?
        .context("tech")?
        .user;
    let expired = session_for(db, user.id, storage::now_ms() - 1000).await?;
    let (status, _) = call(Method::GET, &me, Some(&expired), None).await?;
    ensure!(status == 401, "expired token: {status}");
    for bad in [
        "garbage",
        "hs_AAAA",
        "gk_0123456789ab_short",
        "gk_zz",
        &format!("{tech}x"),
    ] {
        let (status, _) = call(Method::GET, &me, Some(bad), None).await?;
        ensure!(status == 401, "malformed token {bad:?}: {status}");
    }
    let resp = reqwest::Client::new()
        .get(&me)
        .header("Authorization", "Basic dGVjaDp4")
        .send()
        .await?;
    ensure!(resp.status() == 401, "Basic auth: {}", resp.status());
    ensure!(
        resp.headers().contains_key("www-authenticate"),
        "401 without WWW-Authenticate"
    );

    // Logging in for a bearer token, then out: the token stops working.
    let login = format!("{}/api/auth/login", hub.url);
    let (status, body) = call(
        Method::POST,
        &login,
        None,
        Some(json!({"username": "tech", "password": PASSWORD, "kind": "bearer"})),
    )
    .await?;
    ensure!(status == 200, "login: {status} {body}");
    ensure!(
        !body.to_string().contains(PASSWORD),
        "login answer holds the password"
    );
    let token = body["token"].as_str().context("token")?.to_string();
    secrets.push(token.clone());
    ensure!(call(Method::GET, &me, Some(&token), None).await?.0 == 200);
    let (status, _) = call(
        Method::POST,
        &format!("{}/api/auth/logout", hub.url),
        Some(&token),
        None,
    )
    .await?;
    ensure!(status == 200, "logout: {status}");
    ensure!(
        call(Method::GET, &me, Some(&token), None).await?.0 == 401,
        "token works after logout"
    );

    // The web UI's cookie: HTTP-only, same-site, and it works.
    let resp = reqwest::Client::new()
        .post(&login)
        .json(&json!({"username": "tech", "password": PASSWORD}))
        .send()
        .await?;
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .context("set-cookie")?
        .to_string();
    ensure!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "cookie: {cookie}"
    );
    let pair = cookie.split(';').next().context("cookie pair")?.to_string();
    secrets.push(
        pair.split_once('=')
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
    );
    let resp = reqwest::Client::new()
        .get(&me)
        .header("Cookie", &pair)
        .send()
        .await?;
    ensure!(resp.status() == 200, "cookie session: {}", resp.status());

    // An admin ends all of a user's sessions; a disabled user is out at once.
    let again = session_for(db, user.id, storage::now_ms() + 60_000).await?;
    let admin = env.accounts()?.admin.clone();
    let (status, _) = call(
        Method::DELETE,
        &format!("{}/api/admin/users/tech/sessions", hub.url),
        Some(&admin),
        None,
    )
    .await?;
    ensure!(status == 200, "revoke sessions: {status}");
    ensure!(
        call(Method::GET, &me, Some(&again), None).await?.0 == 401,
        "revoked session works"
    );
    let resp = reqwest::Client::new()
        .get(&me)
        .header("Cookie", &pair)
        .send()
        .await?;
    ensure!(resp.status() == 401, "revoked cookie works");
    let clin = create_user(db, &person("clin", Role::Clinician, &["township-a"])).await?;
    let (status, _) = call(
        Method::POST,
        &format!("{}/api/admin/users/clin/disable", hub.url),
        Some(&admin),
        None,
    )
    .await?;
    ensure!(status == 204, "disable: {status}");
    ensure!(
        call(Method::GET, &me, Some(&clin), None).await?.0 == 401,
        "disabled user's token works"
    );

    // A revoked gateway key is refused.
    let (status, body) = call(
        Method::POST,
        &format!("{}/api/admin/gateway-keys", hub.url),
        Some(&admin),
        Some(json!({"site": "township-b", "label": "spare"})),
    )
    .await?;
    ensure!(status == 201, "create key: {status} {body}");
    let key = body["key"].as_str().context("key")?.to_string();
    secrets.push(key.clone());
    let id = body["gateway_key"]["id"]
        .as_str()
        .context("key id")?
        .to_string();
    let files = read_all(&make_study(&env, "k", 1, "key-revoke", &[]))?;
    ensure!(
        stow_as(&hub.url, Some(&key), &files).await?.0 == 200,
        "new key stores"
    );
    let (status, _) = call(
        Method::DELETE,
        &format!("{}/api/admin/gateway-keys/{id}", hub.url),
        Some(&admin),
        None,
    )
    .await?;
    ensure!(status == 204, "revoke key: {status}");
    ensure!(
        stow_as(&hub.url, Some(&key), &files).await?.0 == 401,
        "revoked key stores"
    );

    // Guessing: five wrong passwords lock the account; then even the right one waits.
    create_user(db, &person("nurse", Role::Technician, &["township-a"])).await?;
    let wrong = json!({"username": "nurse", "password": "not-the-password"});
    let unknown = json!({"username": "nobody", "password": "not-the-password"});
    let (_, unknown_body) = call(Method::POST, &login, None, Some(unknown)).await?;
    for n in 1..=5 {
        let (status, body) = call(Method::POST, &login, None, Some(wrong.clone())).await?;
        ensure!(status == 401, "wrong password {n}: {status}");
        ensure!(
            body == unknown_body,
            "unknown user and wrong password answer differently"
        );
    }
    let resp = reqwest::Client::new()
        .post(&login)
        .json(&json!({"username": "nurse", "password": PASSWORD}))
        .send()
        .await?;
    ensure!(resp.status() == 429, "locked account: {}", resp.status());
    ensure!(
        resp.headers().contains_key("retry-after"),
        "429 without Retry-After"
    );

    // Nothing said or logged reveals a password, token or key.
    let log = std::fs::read_to_string(&hub.proc.log)?;
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        ensure!(!log.contains(s.as_str()), "the hub log holds a secret");
    }
    let exported = env.hub_cli(&["audit", "export"])?;
    let exported = String::from_utf8_lossy(&exported.stdout);
    ensure!(
        exported.contains("wrong password"),
        "failed logins are audited"
    );
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        ensure!(
            !exported.contains(s.as_str()),
            "the audit trail holds a secret"
        );
    }
    Ok(())
}

/// Audit events of a study with the given action code.
async fn events_of(
    db: &storage::Db,
    study: &str,
    action: &str,
) -> Result<Vec<storage::audit::Event>> {
    let filter = storage::audit::Filter {
        study_uid: Some(study.to_string()),
        ..Default::default()
    };
    Ok(storage::audit::list(db, &filter)
        .await?
        .into_iter()
        .filter(|e| e.action == action)
        .collect())
}

/// Behind the county's reverse proxy the audit trail records the workstation the proxy
/// saw, and nobody else can choose what it records by sending the header themselves.
pub async fn audit_names_the_client_behind_a_trusted_proxy(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let behind_proxy = Hub::start_with(
        &env,
        "proxied",
        0,
        &[("HUB_ACCESS__TRUSTED_PROXIES", "[127.0.0.1]")],
    )?;
    let direct = Hub::start(&env, "direct", 0)?;
    let files = make_study(&env, "p", 1, "proxy-audit", &[]);
    let study = tests::study_uid_of(&files[0])?;
    let (status, body) = stow(&direct.url, Some("township-a"), &read_all(&files)?).await?;
    ensure!(status == 200, "{status} {body}");
    let reader_token = env.accounts()?.reader.clone();
    let storage = env.storage().await?;
    let client = reqwest::Client::new();
    for (hub, expected) in [(&behind_proxy, "192.168.7.7"), (&direct, "127.0.0.1")] {
        let status = client
            .get(format!("{}/dicomweb/studies/{study}/metadata", hub.url))
            .bearer_auth(&reader_token)
            // A forged first hop, then the address the (trusted) proxy saw.
            .header("X-Forwarded-For", "6.6.6.6, 192.168.7.7")
            .send()
            .await?
            .status();
        ensure!(status == StatusCode::OK, "metadata: {status}");
        let reads = events_of(&storage.db, &study, "R").await?;
        let last = reads.last().context("read event")?;
        ensure!(
            last.client_addr.as_deref() == Some(expected),
            "recorded {:?}, expected {expected}",
            last.client_addr
        );
    }
    Ok(())
}

/// `hub audit verify`: (exit code, output).
fn verify(env: &Env) -> Result<(i32, String)> {
    let out = env.hub_cli(&["audit", "verify"])?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

pub async fn audit_trail_records_reads_and_detects_tampering(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let files = make_study(&env, "a", 2, "audit-a", &[]);
    let study = tests::study_uid_of(&files[0])?;
    let (status, body) = stow(&hub.url, Some("township-a"), &read_all(&files)?).await?;
    ensure!(status == 200, "{status} {body}");
    let storage = env.storage().await?;
    let db = &storage.db;
    let stored = events_of(db, &study, "C").await?;
    ensure!(
        stored.len() == 1,
        "one store event per study and request: {stored:?}"
    );
    ensure!(
        stored[0].actor.starts_with("gateway:") && stored[0].site.as_deref() == Some("township-a")
    );

    // Each read of the exam is exactly one event, naming reader, patient and study.
    let reader_token = env.accounts()?.reader.clone();
    let dw = hub.dicomweb();
    for (n, url) in [
        format!("{dw}/studies/{study}/metadata"),
        format!("{dw}/studies/{study}"),
    ]
    .iter()
    .enumerate()
    {
        let (status, _) = call(Method::GET, url, Some(&reader_token), None).await?;
        ensure!(status == 200, "read {url}: {status}");
        let reads = events_of(db, &study, "R").await?;
        ensure!(
            reads.len() == n + 1,
            "after read {}: {} read events",
            n + 1,
            reads.len()
        );
        let last = reads.last().context("read event")?;
        ensure!(
            last.actor == "user:reader" && last.role == "reader",
            "{last:?}"
        );
        ensure!(
            last.patient_id.is_some() && last.exam_id.is_some(),
            "{last:?}"
        );
        ensure!(last.client_addr.as_deref() == Some("127.0.0.1"), "{last:?}");
    }
    // A refused read (another site's technician) reads nothing and records no read.
    let tech_b = create_user(db, &person("tech-b", Role::Technician, &["township-b"])).await?;
    let (status, _) = call(
        Method::GET,
        &format!("{dw}/studies/{study}/metadata"),
        Some(&tech_b),
        None,
    )
    .await?;
    ensure!(status == 404);
    ensure!(events_of(db, &study, "R").await?.len() == 2);

    // The admin API lists by patient and exports JSON lines.
    let patient = stored[0].patient_id.clone().context("patient id")?;
    let admin = env.accounts()?.admin.clone();
    let url = format!("{}/api/admin/audit?patient={patient}&format=jsonl", hub.url);
    let (status, body) = call(Method::GET, &url, Some(&admin), None).await?;
    ensure!(status == 200, "audit list: {status}");
    let lines: Vec<Value> = body
        .as_str()
        .context("jsonl text")?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        lines.len() == 3 && lines.iter().all(|l| l["patient_id"] == patient.as_str()),
        "{lines:?}"
    );
    ensure!(lines[0]["event_id"] == "110104", "{}", lines[0]);

    // Untouched, the chain verifies.
    let (code, out) = verify(&env)?;
    ensure!(code == 0, "intact chain refused: {out}");

    let unlock: Vec<String> = match backend {
        Backend::SqliteLocal => vec![
            "DROP TRIGGER audit_events_no_update".into(),
            "DROP TRIGGER audit_events_no_delete".into(),
        ],
        Backend::PostgresS3 => {
            vec!["ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change".into()]
        }
    };
    // The database itself refuses edits while the triggers stand.
    ensure!(
        tests::run_sql(
            &env,
            &["UPDATE audit_events SET actor = 'x' WHERE seq = 1".into()]
        )
        .await
        .is_err(),
        "audit rows are editable"
    );
    tests::run_sql(&env, &unlock).await?;
    let seq = stored[0].seq;

    // One field edited: named; put back: intact again.
    tests::run_sql(
        &env,
        &[format!(
            "UPDATE audit_events SET actor = 'user:mallory' WHERE seq = {seq}"
        )],
    )
    .await?;
    let (code, out) = verify(&env)?;
    ensure!(
        code == 2 && out.contains(&format!("event {seq}: Altered")),
        "edit not named: {out}"
    );
    tests::run_sql(
        &env,
        &[format!(
            "UPDATE audit_events SET actor = '{}' WHERE seq = {seq}",
            stored[0].actor
        )],
    )
    .await?;
    ensure!(verify(&env)?.0 == 0, "restored chain refused");

    // Two events swapped (their contents trade places): named.
    let swap = |a: i64, b: i64| {
        vec![
            format!("UPDATE audit_events SET seq = -1 WHERE seq = {a}"),
            format!("UPDATE audit_events SET seq = {a} WHERE seq = {b}"),
            format!("UPDATE audit_events SET seq = {b} WHERE seq = -1"),
        ]
    };
    tests::run_sql(&env, &swap(seq, seq + 1)).await?;
    let (code, out) = verify(&env)?;
    ensure!(
        code == 2 && out.contains(&format!("event {seq}:")),
        "reorder not named: {out}"
    );
    tests::run_sql(&env, &swap(seq, seq + 1)).await?;
    ensure!(verify(&env)?.0 == 0, "restored order refused");

    // One event removed: named.
    tests::run_sql(
        &env,
        &[format!("DELETE FROM audit_events WHERE seq = {}", seq + 1)],
    )
    .await?;
    let (code, out) = verify(&env)?;
    ensure!(
        code == 2 && out.contains(&format!("event {}: Missing", seq + 1)),
        "removal not named: {out}"
    );
    Ok(())
}

pub async fn first_start_and_admin_commands(backend: Backend) -> Result<()> {
    let env = Env::bare(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let password_file = env.path("hub").join("initial-admin-password");
    let password = std::fs::read_to_string(&password_file)
        .context("the first start writes the admin password")?
        .trim()
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&password_file)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "password file mode {mode:o}");
    let login =
        |user: &str, pass: &str| json!({"username": user, "password": pass, "kind": "bearer"});
    let url = format!("{}/api/auth/login", hub.url);
    let (status, body) = call(Method::POST, &url, None, Some(login("admin", &password))).await?;
    ensure!(
        status == 200 && body["user"]["role"] == "admin",
        "admin login: {status} {body}"
    );

    // The admin commands make a township ready: site, technician, gateway key.
    let run = |args: &[&str]| -> Result<String> {
        let out = env.hub_cli(args)?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(
            out.status.success(),
            "hub {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text)
    };
    run(&[
        "admin",
        "site-add",
        "township-x",
        "新华镇卫生院",
        "--kind",
        "township",
    ])?;
    let out = run(&[
        "admin",
        "user-add",
        "tech-x",
        "--role",
        "technician",
        "--site",
        "township-x",
    ])?;
    let tech_password = out
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .context("generated password")?;
    let (status, body) = call(
        Method::POST,
        &url,
        None,
        Some(login("tech-x", tech_password)),
    )
    .await?;
    ensure!(
        status == 200 && body["user"]["sites"] == json!(["township-x"]),
        "{status} {body}"
    );
    let out = run(&["admin", "key-create", "--site", "township-x"])?;
    let key = out
        .lines()
        .find_map(|l| l.split(": ").nth(1).filter(|k| k.starts_with("gk_")))
        .context("key")?
        .to_string();
    let files = read_all(&make_study(&env, "x", 1, "first-start", &[]))?;
    ensure!(
        stow_as(&hub.url, Some(&key), &files).await?.0 == 200,
        "the new key stores"
    );
    let listed = run(&["admin", "keys"])?;
    ensure!(!listed.contains(&key), "key list shows the key");
    let id = key
        .trim_start_matches("gk_")
        .split('_')
        .next()
        .context("id")?;
    run(&["admin", "key-revoke", id])?;
    ensure!(
        stow_as(&hub.url, Some(&key), &files).await?.0 == 401,
        "the revoked key stores"
    );

    // A bad request to the CLI says what is wrong.
    let out = env.hub_cli(&["admin", "user-add", "r", "--role", "reader"])?;
    ensure!(!out.status.success(), "reader without specialty accepted");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("specialty"),
        "unclear error"
    );
    ensure!(run(&["audit", "verify"])?.contains("intact"));
    Ok(())
}

/// A raw request with a body sent as given (not re-encoded), answering status and JSON.
async fn send_raw(
    method: Method,
    url: &str,
    token: &str,
    body: &'static str,
) -> Result<(StatusCode, Value)> {
    let resp = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text)
        .with_context(|| format!("{url}: {status} answered no JSON body: {text:?}"))?;
    Ok((status, body))
}

/// The one error body: a machine-readable code and a message naming the problem.
fn is_error_body(body: &Value, code: &str) -> bool {
    body["error"] == code && body["message"].as_str().is_some_and(|m| !m.is_empty())
}

/// A malformed or misspelt admin body is refused with 400 and the one error body, and
/// changes nothing: no generated password, no deadline reset to its default. Bad names
/// (`../../etc`) are refused like bad site ids.
pub async fn admin_bodies_change_only_what_they_name(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let storage = env.storage().await?;
    let admin = env.accounts()?.admin.clone();
    create_user(
        &storage.db,
        &person("nurse", Role::Technician, &["township-a"]),
    )
    .await?;
    let login = format!("{}/api/auth/login", hub.url);
    let logs_in = |password: &'static str| {
        let login = login.clone();
        async move {
            let (status, _) = call(
                Method::POST,
                &login,
                None,
                Some(json!({"username": "nurse", "password": password, "kind": "bearer"})),
            )
            .await?;
            anyhow::Ok(status == 200)
        }
    };

    let reset = format!("{}/api/admin/users/nurse/password", hub.url);
    for bad in [
        r#"{"pasword": "Another-long-passphrase-1"}"#,
        r#"{"password": "Another-long-passphrase-1""#,
        r#"{"password": 17}"#,
        "password=x",
    ] {
        let (status, body) = send_raw(Method::POST, &reset, &admin, bad).await?;
        ensure!(
            status == 400 && is_error_body(&body, "invalid_json"),
            "password body {bad:?}: {status} {body}"
        );
        ensure!(
            body.get("password").is_none(),
            "{bad:?} generated a password"
        );
    }
    ensure!(
        logs_in(PASSWORD).await?,
        "a refused reset changed the password"
    );
    let (status, body) = send_raw(
        Method::POST,
        &reset,
        &admin,
        r#"{"password": "Another-long-passphrase-1"}"#,
    )
    .await?;
    ensure!(
        status == 200 && body["password"].is_null(),
        "reset: {status} {body}"
    );
    ensure!(
        logs_in("Another-long-passphrase-1").await?,
        "the reset did not take"
    );

    let deadlines = format!("{}/api/admin/deadlines", hub.url);
    let (status, body) = send_raw(
        Method::PUT,
        &deadlines,
        &admin,
        r#"{"stat_minutes": 12, "urgent_minutes": 50, "routine_minutes": 300}"#,
    )
    .await?;
    ensure!(status == 200, "deadlines: {status} {body}");
    for bad in [
        r#"{"stat_minute": 5}"#,
        r#"{"by_kind": {"ecg": {"stat": 5}}}"#,
        r#"{"stat_minutes": 5"#,
    ] {
        let (status, body) = send_raw(Method::PUT, &deadlines, &admin, bad).await?;
        ensure!(
            status == 400 && is_error_body(&body, "invalid_json"),
            "deadlines body {bad:?}: {status} {body}"
        );
    }
    // Naming one target changes that one only.
    let (status, body) =
        send_raw(Method::PUT, &deadlines, &admin, r#"{"urgent_minutes": 45}"#).await?;
    ensure!(status == 200, "one deadline: {status} {body}");
    let (_, now) = call(Method::GET, &deadlines, Some(&admin), None).await?;
    ensure!(
        now["stat_minutes"] == 12 && now["urgent_minutes"] == 45 && now["routine_minutes"] == 300,
        "deadlines after refused and partial changes: {now}"
    );

    // Malformed login JSON answers the same error body.
    let resp = reqwest::Client::new()
        .post(&login)
        .header("Content-Type", "application/json")
        .body(r#"{"username": "nurse""#)
        .send()
        .await?;
    ensure!(resp.status() == 400, "malformed login: {}", resp.status());
    let body: Value = resp.json().await.context("malformed login answers JSON")?;
    ensure!(is_error_body(&body, "invalid_json"), "{body}");

    let users = format!("{}/api/admin/users", hub.url);
    for name in ["../../etc", "Wang Li", "a/b", ".hidden", ""] {
        let (status, body) = call(
            Method::POST,
            &users,
            Some(&admin),
            Some(
                json!({"username": name, "display_name": "X", "role": "technician",
                        "sites": ["township-a"]}),
            ),
        )
        .await?;
        ensure!(
            status == 400 && is_error_body(&body, "invalid"),
            "username {name:?}: {status} {body}"
        );
    }
    let (status, body) = call(
        Method::POST,
        &users,
        Some(&admin),
        Some(
            json!({"username": "wang.li", "display_name": "王丽", "role": "technician",
                    "sites": ["township-a"], "site": "typo"}),
        ),
    )
    .await?;
    ensure!(
        status == 400 && is_error_body(&body, "invalid_json"),
        "unknown user field: {status} {body}"
    );
    let (status, body) = call(
        Method::POST,
        &users,
        Some(&admin),
        Some(
            json!({"username": "wang.li", "display_name": "王丽", "role": "technician",
                    "sites": ["township-a"]}),
        ),
    )
    .await?;
    ensure!(status == 201, "a good username: {status} {body}");
    Ok(())
}
