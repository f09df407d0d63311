//! The readers', townships' and administrators' web UI: plain HTML, CSS and JavaScript
//! modules compiled into the binary, so running the product needs no front-end build step
//! and no files beside the executable. The pages talk only to the public APIs (session,
//! worklist, reports, DICOMweb, ECG, lab, admin); the access guard treats `/` and `/ui/`
//! as public because they hold no data.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! assets {
    ($($name:literal => $ct:expr),* $(,)?) => {
        &[$(Asset { name: $name, content_type: $ct, body: include_str!(concat!("../ui/", $name)) }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "app.js" => JS,
    "api.js" => JS,
    "i18n.js" => JS,
    "dom.js" => JS,
    "worklist.js" => JS,
    "exam.js" => JS,
    "viewer.js" => JS,
    "report.js" => JS,
    "admin.js" => JS,
};

/// Mount `/` (redirect to the UI) and `/ui/{file}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/ui", web::get().to(root))
        .route("/ui/", web::get().to(index))
        .route("/ui/{file}", web::get().to(file));
}

async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

async fn file(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    serve(&req, &name)
}

fn serve(req: &HttpRequest, name: &str) -> HttpResponse {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("no UI file {name:?}"));
    };
    // The build's version tags every file: browsers revalidate and get 304 until the
    // binary changes, so an upgrade never leaves a stale script in a reader's cache.
    let etag = format!(
        "\"{}-{}\"",
        env!("CARGO_PKG_VERSION"),
        build_tag(asset.body)
    );
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut answer = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    answer
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ));
    if fresh {
        answer.finish()
    } else {
        answer.content_type(asset.content_type).body(asset.body)
    }
}

/// A short content tag (FNV-1a): cheap, stable across builds of the same file.
fn build_tag(body: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_imported_is_embedded() {
        // A module imported by another but missing here would 404 in the browser.
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in asset.body.lines() {
                let Some(rest) = line.split(" from \"./").nth(1) else {
                    continue;
                };
                let imported = rest.split('"').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|a| a.name == imported),
                    "{} imports {imported}, which is not embedded",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn translations_have_both_languages() {
        let i18n = ASSETS.iter().find(|a| a.name == "i18n.js").map(|a| a.body);
        let entries: Vec<&str> = i18n
            .unwrap_or_default()
            .lines()
            .filter(|l| l.trim_end().ends_with("},") && l.contains(": {"))
            .collect();
        assert!(entries.len() > 50, "too few strings: {}", entries.len());
        for line in entries {
            assert!(
                line.contains("{ zh: \"") && line.contains("\", en: \""),
                "every string needs Chinese and English: {line}"
            );
        }
    }
}
