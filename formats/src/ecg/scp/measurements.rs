//! Sections 7 (global measurements), 8 (full-text interpretation) and 11 (universal
//! statement codes).
//!
//! These are the device's suggestions, read leniently: a section that ends early
//! yields what it holds instead of refusing a record whose waveform is intact.

use super::header::{text, Charset};
use super::u16_at;
use crate::ecg::Measurements;

/// Values with which EN 1064 marks a measurement as absent: 29999 not computed, 29998
/// lead rejected, 19999 wave not present.
fn present(v: u16) -> Option<u16> {
    (!matches!(v, 19_999 | 29_998 | 29_999 | 0xFFFF)).then_some(v)
}

/// Read section 7 into `m`: average RR, the first (dominant) QRS type's P onset/offset,
/// QRS onset/offset, T offset and frontal axes, then ventricular rate and QTc from the
/// additional measurements after the pacemaker and QRS type lists.
pub(crate) fn read_global(body: &[u8], m: &mut Measurements) {
    let (Some(&blocks), Some(&spikes)) = (body.first(), body.get(1)) else {
        return;
    };
    m.rr_ms = u16_at(body, 2).and_then(present).map(f64::from);
    if blocks > 0 {
        if let Some(b) = body.get(6..22) {
            let at = |i: usize| u16_at(b, i * 2).and_then(present);
            let (p_on, qrs_on, qrs_off, t_off) = (at(0), at(2), at(3), at(4));
            let span = |a: Option<u16>, b: Option<u16>| match (a, b) {
                (Some(a), Some(b)) if b >= a => Some(f64::from(b - a)),
                _ => None,
            };
            m.pr_ms = span(p_on, qrs_on);
            m.qrs_ms = span(qrs_on, qrs_off);
            m.qt_ms = span(qrs_on, t_off);
            // Axes are signed degrees; 999 means undefined.
            let axis = |i: usize| at(i).filter(|v| *v != 999).map(|v| f64::from(v as i16));
            m.p_axis = axis(5);
            m.qrs_axis = axis(6);
            m.t_axis = axis(7);
        }
    }
    // Pacemaker spikes: 4 bytes each, then 6 bytes of spike information each.
    let after_spikes = 6 + usize::from(blocks) * 16 + usize::from(spikes) * 10;
    let Some(qrs_count) = u16_at(body, after_spikes) else {
        return;
    };
    let additional = after_spikes + 2 + usize::from(qrs_count);
    m.heart_rate_bpm = u16_at(body, additional).and_then(present).map(f64::from);
    m.qtc_ms = u16_at(body, additional + 4)
        .and_then(present)
        .map(f64::from);
}

/// Statements of section 8 (`coded == false`) or 11 (`coded == true`): a confirmation
/// byte, date (4) and time (3), the number of statements, then for each a sequence
/// number, a 2-byte length and the text (in section 11 after a 1-byte type).
pub(crate) fn read_statements(body: &[u8], coded: bool, charset: Charset) -> Vec<String> {
    let mut out = Vec::new();
    let Some(&count) = body.get(8) else {
        return out;
    };
    let mut at = 9usize;
    for _ in 0..count {
        let Some(len) = u16_at(body, at + 1) else {
            break;
        };
        let start = at + 3;
        let Some(value) = body.get(start..start + usize::from(len)) else {
            break;
        };
        at = start + usize::from(len);
        // Section 11 type 1 is a coded statement, 2 full text; 3 is statement logic.
        let value = match (coded, value.split_first()) {
            (false, _) => value,
            (true, Some((1 | 2, rest))) => rest,
            (true, _) => continue,
        };
        if let Some(s) = text(value, charset) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecg_scp_short_sections_yield_what_they_hold() {
        let mut m = Measurements::default();
        read_global(&[1, 0, 0x20, 0x03], &mut m);
        assert_eq!(m.rr_ms, Some(800.0));
        assert_eq!(m.pr_ms, None);
        assert!(read_statements(&[0; 9], false, Charset::Latin1).is_empty());
        let mut s8 = vec![0u8; 8];
        s8.extend_from_slice(&[2, 1, 4, 0, b' ', b'o', b'k', 0, 2, 0xFF, 0xFF]);
        assert_eq!(read_statements(&s8, false, Charset::Latin1), ["ok"]);
    }
}
