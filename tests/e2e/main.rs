//! End-to-end suite: every test runs on both backend pairs (SQLite + local directory,
//! PostgreSQL + S3) with real processes and third-party clients.

mod access;
mod critical_values;
mod ecg;
mod imaging;
mod lab;
mod qido;
mod reading;
mod rendering;
mod round_trip;
mod scale_out;
mod storage_suite;
mod stow;
mod township;
mod transport;
mod webui;

use std::path::PathBuf;
use std::process::Command;

/// Declare `async fn name(backend)` tests once; run each on both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(tests::Backend::SqliteLocal).await.unwrap();
                }
            )*
        }
        mod postgres_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(tests::Backend::PostgresS3).await.unwrap();
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// Generate DICOM files with `tests/py/make_dicom.py`; returns their paths.
pub fn make_dicom(args: &[&str]) -> Vec<PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/make_dicom.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "make_dicom.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Generate `count` instances of one study (UIDs derived from `salt`) under the test's
/// directory `dir`; `extra` are further `make_dicom.py study` options.
pub fn make_study(
    env: &tests::Env,
    dir: &str,
    count: usize,
    salt: &str,
    extra: &[&str],
) -> Vec<PathBuf> {
    let out = env.path(dir);
    let count = count.to_string();
    let mut args = vec![
        "study",
        out.to_str().expect("UTF-8 temp path"),
        &count,
        "--salt",
        salt,
    ];
    args.extend_from_slice(extra);
    make_dicom(&args)
}
