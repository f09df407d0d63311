//! What an ECG file's request to the hub looks like: `POST {hub_url}/ingest/ecg?
//! priority=stat|routine&filename=<percent-encoded name>` with the original bytes as the
//! body. The request itself and how the hub's answer is judged (`200
//! {"status":…,"exam_id":N}` delivered, 400/409 quarantined with the hub's `error`) are
//! shared with the laboratory lane ([`crate::filelane::forward`]).

/// The hub's ingest path.
pub const INGEST_PATH: &str = "/ingest/ecg";
/// The body is the file as it was, whatever its format.
pub const CONTENT_TYPE_OCTETS: &str = "application/octet-stream";

/// The request path with its query: priority and the original file name.
pub fn ingest_path(stat: bool, file_name: &str) -> String {
    let priority = if stat { "stat" } else { "routine" };
    format!(
        "{INGEST_PATH}?priority={priority}&filename={}",
        percent_encode(file_name)
    )
}

/// Percent-encode everything but RFC 3986 unreserved characters (UTF-8 bytes of a
/// Chinese file name included), so the name survives any query-string decoder.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_carries_priority_and_the_encoded_name() {
        assert_eq!(
            ingest_path(true, "ECG 1+2&x=y.scp"),
            "/ingest/ecg?priority=stat&filename=ECG%201%2B2%26x%3Dy.scp"
        );
        assert_eq!(
            ingest_path(false, "心电图.xml"),
            "/ingest/ecg?priority=routine&filename=%E5%BF%83%E7%94%B5%E5%9B%BE.xml"
        );
    }
}
