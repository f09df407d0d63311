//! DICOM DT / HL7 TS date-times to milliseconds since the epoch.

/// Offset assumed for a time without a zone: the carts and the hub are in China.
pub(crate) const DEFAULT_OFFSET_MINUTES: i32 = 8 * 60;

/// Parse `YYYYMMDD[HH[MM[SS[.F{1,6}]]]][&ZZXX]` (DICOM DT and HL7 TS share this form)
/// into ms since the Unix epoch. `offset_minutes` applies when the value has no zone.
/// `None` when the date part is missing or out of range.
pub(crate) fn parse_dt_ms(value: &str, offset_minutes: i32) -> Option<i64> {
    let value = value.trim();
    let (main, zone) = match value.find(['+', '-']) {
        Some(i) => (&value[..i], Some(&value[i..])),
        None => (value, None),
    };
    let offset = match zone {
        Some(z) => parse_zone(z)?,
        None => offset_minutes,
    };
    let (digits, fraction) = match main.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (main, None),
    };
    if digits.len() < 8 || digits.len() > 14 || digits.len() % 2 != 0 {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        digits
            .get(from..from + len)
            .map_or(Some(0), |s| s.parse().ok())
    };
    let (year, month, day) = (num(0, 4)?, num(4, 2)?, num(6, 2)?);
    let (hour, minute, second) = (num(8, 2)?, num(10, 2)?, num(12, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let millis = match fraction {
        Some(f) if !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<6}");
            padded.parse::<i64>().ok()? / 1000
        }
        Some(f) if !f.is_empty() => return None,
        _ => 0,
    };
    let days = days_from_civil(year, month, day);
    let local = ((days * 24 + hour) * 60 + minute) * 60 + second;
    Some((local - i64::from(offset) * 60) * 1000 + millis)
}

/// `+HHMM` / `-HHMM` to minutes east of UTC.
pub(crate) fn parse_zone(zone: &str) -> Option<i32> {
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = zone.get(1..)?;
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 60 + minutes))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecg_times_default_to_china_standard_time() {
        // 2004-01-15 11:20:04 at UTC+8 is 03:20:04 UTC.
        assert_eq!(
            parse_dt_ms("20040115112004.000", DEFAULT_OFFSET_MINUTES),
            Some(1_074_136_804_000)
        );
        assert_eq!(
            parse_dt_ms("20040115112004.5+0000", DEFAULT_OFFSET_MINUTES),
            Some(1_074_165_604_500)
        );
        assert_eq!(parse_dt_ms("19700101", 0), Some(0));
        assert_eq!(parse_dt_ms("20240229", 0), Some(1_709_164_800_000));
        assert_eq!(parse_dt_ms("2024", 0), None);
        assert_eq!(parse_dt_ms("20241301", 0), None);
        assert_eq!(parse_dt_ms("20240101120000.1234567", 0), None);
        assert_eq!(parse_dt_ms("2024010112xx", 0), None);
        assert_eq!(parse_dt_ms("20240101+99", 0), None);
        assert_eq!(parse_dt_ms("ééééééééé", 0), None);
    }
}
