//! HL7 timestamps (TS / DTM) to epoch milliseconds.

/// China Standard Time, for timestamps without a zone (docs/lab.md).
const DEFAULT_OFFSET_MINUTES: i64 = 8 * 60;

/// `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]` to milliseconds since the Unix
/// epoch. Missing parts are the start of the period (`2024` is 1 January 00:00); no zone
/// means UTC+8. `None` for anything else (wrong length, impossible dates, a zone that
/// is not `±HHMM`).
pub fn ts_to_ms(ts: &str) -> Option<i64> {
    let ts = ts.trim();
    let (body, zone) = match ts.find(['+', '-']) {
        Some(i) => (&ts[..i], Some(&ts[i..])),
        None => (ts, None),
    };
    let (digits, fraction) = match body.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (body, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![4, 6, 8, 10, 12, 14].contains(&digits.len())
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>, default: i64| -> i64 {
        digits
            .get(range)
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(default)
    };
    let (year, month, day) = (num(0..4, 0), num(4..6, 1), num(6..8, 1));
    let (hour, minute, second) = (num(8..10, 0), num(10..12, 0), num(12..14, 0));
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let millis = match fraction {
        None => 0,
        // Fractions only after seconds, 1 to 4 digits.
        Some(f)
            if digits.len() == 14
                && (1..=4).contains(&f.len())
                && f.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let padded = format!("{f:0<3}");
            padded[..3].parse::<i64>().ok()?
        }
        Some(_) => return None,
    };
    let offset_minutes = match zone {
        None => DEFAULT_OFFSET_MINUTES,
        Some(z) => {
            let (sign, hhmm) = z.split_at(1);
            if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (h, m) = (
                hhmm[..2].parse::<i64>().ok()?,
                hhmm[2..].parse::<i64>().ok()?,
            );
            if h > 14 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if sign == "-" {
                -minutes
            } else {
                minutes
            }
        }
    };
    let days = days_from_civil(year, month, day);
    let local_ms = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis;
    Some(local_ms - offset_minutes * 60_000)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
