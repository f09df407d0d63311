//! Section 1: patient data and ECG acquisition data, as tag/length/value fields.
//!
//! Section 1 is metadata: a malformed field is skipped rather than refusing a record
//! whose waveform (checked by CRC) is intact.

use super::u16_at;
use crate::ecg::time::{days_from_civil, DEFAULT_OFFSET_MINUTES};
use crate::ecg::Ecg;

/// How free text in the record is encoded, from the language support code of the
/// acquiring device (tag 14, byte 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charset {
    /// ASCII or ISO 8859-1 (read as Windows-1252, its superset).
    Latin1,
    /// GB 2312 (read as GB18030, its superset).
    Gb,
}

/// The tag/value fields of section 1, in file order; stops at tag 255 or at the
/// first field that does not fit.
fn fields(body: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let (Some(&tag), Some(len)) = (body.get(at), u16_at(body, at + 1)) {
        if tag == 255 {
            break;
        }
        let start = at + 3;
        let Some(value) = body.get(start..start + usize::from(len)) else {
            break;
        };
        out.push((tag, value));
        at = start + usize::from(len);
    }
    out
}

/// The text charset declared by the record's section 1.
pub(crate) fn charset(section1: Option<&[u8]>) -> Charset {
    let code = section1
        .map(fields)
        .and_then(|f| f.into_iter().find(|(tag, _)| *tag == 14))
        .and_then(|(_, v)| v.get(16).copied());
    // [memory] EN 1064 language support code 0x27 is GB 2312; the others we meet are
    // ASCII (0) or ISO 8859-1 (1).
    if code == Some(0x27) {
        Charset::Gb
    } else {
        Charset::Latin1
    }
}

/// A NUL-terminated text field: UTF-8 when it is valid UTF-8, otherwise the declared
/// charset. Empty text is `None`.
pub(crate) fn text(value: &[u8], charset: Charset) -> Option<String> {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    let raw = &value[..end];
    let s = match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let encoding = match charset {
                Charset::Latin1 => encoding_rs::WINDOWS_1252,
                Charset::Gb => encoding_rs::GB18030,
            };
            encoding.decode_without_bom_handling(raw).0.into_owned()
        }
    };
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Fill patient, acquisition time, filters, device and priority from section 1.
pub(crate) fn read(body: &[u8], ecg: &mut Ecg) {
    let charset = charset(Some(body));
    let fields = fields(body);
    let get = |tag: u8| fields.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v);
    let txt = |tag: u8| get(tag).and_then(|v| text(v, charset));

    ecg.patient.id = txt(2);
    ecg.patient.name = match (txt(0), txt(1)) {
        (Some(last), Some(first)) => Some(format!("{last}^{first}")),
        (Some(last), None) => Some(last),
        (None, Some(first)) => Some(format!("^{first}")),
        (None, None) => None,
    };
    ecg.patient.birth_date = get(5).and_then(date);
    ecg.patient.sex = get(8).and_then(|v| v.first()).and_then(|s| match s {
        0 => Some("U".to_string()),
        1 => Some("M".to_string()),
        2 => Some("F".to_string()),
        _ => None,
    });
    ecg.device = get(14).and_then(|v| device(v, charset));
    // [memory] Tag 24, stat code: 0 routine, 1-10 emergency levels.
    ecg.order.requested_priority = get(24).and_then(|v| v.first()).map(|code| {
        if *code == 0 {
            "ROUTINE".to_string()
        } else {
            "STAT".to_string()
        }
    });
    if let Some(highpass) = get(27).and_then(|v| u16_at(v, 0)) {
        // Baseline filter in units of 0.01 Hz.
        ecg.filters.highpass_hz = Some(f64::from(highpass) / 100.0);
    }
    ecg.filters.lowpass_hz = get(28)
        .and_then(|v| u16_at(v, 0))
        .filter(|hz| *hz != 0)
        .map(f64::from);
    if let Some(&bits) = get(29).and_then(|v| v.first()) {
        ecg.filters.notch_hz = if bits & 0b01 != 0 {
            Some(60.0)
        } else if bits & 0b10 != 0 {
            Some(50.0)
        } else {
            None
        };
    }
    acquisition_time(get(25), get(26), get(34), ecg);
}

/// Year (u16), month, day as `YYYYMMDD`; `None` for an unset or impossible date.
fn date(v: &[u8]) -> Option<String> {
    let year = u16_at(v, 0)?;
    let (month, day) = (*v.get(2)?, *v.get(3)?);
    if year == 0 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(format!("{year:04}{month:02}{day:02}"))
}

/// Tags 25 (date), 26 (time) and 34 (zone: offset in minutes, 0x7FFF when unused).
fn acquisition_time(
    date_field: Option<&[u8]>,
    time_field: Option<&[u8]>,
    zone_field: Option<&[u8]>,
    ecg: &mut Ecg,
) {
    let Some(day) = date_field.and_then(date) else {
        return;
    };
    let (h, m, s) = match time_field {
        Some(&[h, m, s, ..]) if h < 24 && m < 60 && s < 61 => (h, m, s),
        _ => (0, 0, 0),
    };
    ecg.acquired_at = Some(if time_field.is_some() {
        format!("{day}{h:02}{m:02}{s:02}")
    } else {
        day.clone()
    });
    let offset = zone_field
        .and_then(|z| u16_at(z, 0))
        .map(|raw| raw as i16)
        .filter(|minutes| *minutes != 0x7FFF && minutes.abs() <= 14 * 60)
        .map_or(DEFAULT_OFFSET_MINUTES, i32::from);
    let num = |r: std::ops::Range<usize>| day[r].parse::<i64>().unwrap_or_default();
    let days = days_from_civil(num(0..4), num(4..6), num(6..8));
    let local = ((days * 24 + i64::from(h)) * 60 + i64::from(m)) * 60 + i64::from(s);
    ecg.acquired_at_ms = Some((local - i64::from(offset) * 60) * 1000);
}

/// Manufacturer and model from the acquiring device identification (tag 14): model
/// at bytes 8..14, then after 16 reserved bytes and a length byte, NUL-terminated
/// strings: program revision, serial number, system software, SCP software,
/// manufacturer.
fn device(v: &[u8], charset: Charset) -> Option<String> {
    let model = v.get(8..14).and_then(|m| text(m, charset));
    let strings = v.get(35..).unwrap_or_default();
    let rev_len = usize::from(strings.first().copied().unwrap_or(0));
    let manufacturer = strings
        .get(1 + rev_len..)
        .unwrap_or_default()
        .split(|&b| b == 0)
        .nth(3)
        .and_then(|m| text(m, charset));
    match (manufacturer, model) {
        (Some(a), Some(b)) => Some(format!("{a} {b}")),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecg::SourceFormat;

    #[test]
    fn ecg_scp_header_fields_tolerate_garbage() {
        let mut ecg = Ecg::empty(SourceFormat::ScpEcg);
        // A length running past the end stops the walk instead of panicking.
        read(&[0, 0xFF, 0xFF, b'x'], &mut ecg);
        assert_eq!(ecg.patient.name, None);
        let body = [
            0u8, 4, 0, b'W', b'a', b'n', b'g', //
            1, 3, 0, 0xC0, 0xEE, 0, // GB-coded given name, not valid UTF-8
            14, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x27, //
            25, 4, 0, 0xE8, 0x07, 13, 1, // month 13: impossible, ignored
            255, 0, 0,
        ];
        read(&body, &mut ecg);
        assert_eq!(ecg.patient.name.as_deref(), Some("Wang^李"));
        assert_eq!(ecg.acquired_at, None);
    }
}
