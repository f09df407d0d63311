//! Sections 3 (lead definitions) and 6 (rhythm data).

use super::huffman::{self, Coding};
use super::{scp_error, u16_at, u32_at};
use crate::ecg::leads::lead_name_for_code;
use crate::ecg::{EcgError, Lead, SourceFormat};

/// Most samples accepted per lead: over an hour at 1 kHz, far beyond a resting ECG.
const MAX_SAMPLES_PER_LEAD: usize = 1 << 22;

/// One lead as section 3 defines it.
#[derive(Debug, Clone)]
pub(crate) struct LeadDefinition {
    pub(crate) label: String,
    /// First and last sample numbers (1-based, inclusive, per EN 1064; some carts
    /// count from 0, see [`LeadDefinition::counts`]).
    pub(crate) first: u32,
    pub(crate) last: u32,
}

impl LeadDefinition {
    /// Samples of the inclusive range `first..=last`.
    fn samples(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    /// Sample counts the definition can mean, most likely first. EN 1064 numbers
    /// samples from 1; a cart that writes 0 as the first number either counts from 0
    /// (`0..=last`, `last + 1` samples) or meant "from the start" (`last` samples).
    /// The rhythm data decide which (see [`decode_rhythm`]).
    fn counts(&self) -> Vec<usize> {
        match self.first {
            0 if self.last > 0 => vec![self.samples(), self.samples() - 1],
            _ => vec![self.samples()],
        }
    }
}

/// Decoded rhythm data.
pub(crate) struct Rhythm {
    pub(crate) sample_rate_hz: f64,
    pub(crate) leads: Vec<Lead>,
}

/// Read section 3. Refuses records whose rhythm data are residuals after reference
/// beat subtraction (flag bit 0).
pub(crate) fn read_lead_definitions(body: &[u8]) -> Result<Vec<LeadDefinition>, EcgError> {
    let err = |problem: String| scp_error(Some(3), problem);
    let (&count, &flags) = match body {
        [count, flags, ..] => (count, flags),
        _ => return Err(err("too short for the lead count and flags".into())),
    };
    if count == 0 {
        return Err(err("defines no leads".into()));
    }
    if flags & 0x01 != 0 {
        return Err(EcgError::Unsupported {
            format: SourceFormat::ScpEcg,
            feature: "SCP section 3: rhythm data stored as residuals after reference beat \
                      subtraction (needs sections 4 and 5 to reconstruct)"
                .into(),
        });
    }
    let needed = 2 + usize::from(count) * 9;
    if body.len() < needed {
        return Err(err(format!(
            "{count} leads need {needed} bytes but the section has {}",
            body.len()
        )));
    }
    let mut leads = Vec::with_capacity(usize::from(count));
    for (i, d) in body[2..needed].chunks_exact(9).enumerate() {
        let first = u32_at(d, 0).unwrap_or_default();
        let last = u32_at(d, 4).unwrap_or_default();
        let code = d[8];
        let label = lead_name_for_code(u32::from(code))
            .map_or_else(|| format!("lead {code}"), str::to_string);
        if last < first || (first == 0 && last == 0) {
            return Err(err(format!(
                "lead {} ({label}) has samples {first} to {last}",
                i + 1
            )));
        }
        let def = LeadDefinition { label, first, last };
        if def.samples() > MAX_SAMPLES_PER_LEAD {
            return Err(err(format!(
                "lead {} declares {} samples, more than the {MAX_SAMPLES_PER_LEAD} accepted",
                def.label,
                def.samples()
            )));
        }
        leads.push(def);
    }
    if leads.iter().any(|l| l.first != leads[0].first) {
        return Err(EcgError::Unsupported {
            format: SourceFormat::ScpEcg,
            feature: "SCP section 3: leads starting at different sample numbers".into(),
        });
    }
    Ok(leads)
}

/// Decode section 6: Huffman (or raw 16-bit) samples, then undo first or second
/// differences, then scale by the amplitude multiplier (nV) to µV.
pub(crate) fn decode_rhythm(
    body: &[u8],
    leads: &[LeadDefinition],
    coding: &Coding,
) -> Result<Rhythm, EcgError> {
    let err = |problem: String| scp_error(Some(6), problem);
    let (Some(multiplier_nv), Some(interval_us)) = (u16_at(body, 0), u16_at(body, 2)) else {
        return Err(err("too short for its header".into()));
    };
    let (differences, bimodal) = match body.get(4..6) {
        Some(&[d, b]) => (d, b),
        _ => return Err(err("too short for its header".into())),
    };
    if multiplier_nv == 0 {
        return Err(err("amplitude multiplier is 0 nV".into()));
    }
    if interval_us == 0 {
        return Err(err("sample interval is 0 µs".into()));
    }
    if differences > 2 {
        return Err(err(format!(
            "difference encoding {differences} (0, 1 or 2 expected)"
        )));
    }
    if bimodal != 0 {
        return Err(EcgError::Unsupported {
            format: SourceFormat::ScpEcg,
            feature: "SCP section 6: bimodal compression (decimated rhythm data)".into(),
        });
    }
    let table_end = 6 + leads.len() * 2;
    if body.len() < table_end {
        return Err(err(format!(
            "{} leads need a {}-byte length table but the section has {} bytes",
            leads.len(),
            leads.len() * 2,
            body.len()
        )));
    }
    let mut at = table_end;
    let mut out = Vec::with_capacity(leads.len());
    for (i, def) in leads.iter().enumerate() {
        let len = usize::from(u16_at(body, 6 + i * 2).unwrap_or_default());
        let data = body.get(at..at + len).ok_or_else(|| {
            err(format!(
                "lead {} declares {len} bytes but only {} remain",
                def.label,
                body.len().saturating_sub(at)
            ))
        })?;
        at += len;
        let coded = decode_lead(coding, data, def, len)?;
        let values = undo_differences(coded, differences).ok_or_else(|| {
            err(format!(
                "lead {} overflows when its differences are summed",
                def.label
            ))
        })?;
        let scale = f64::from(multiplier_nv) / 1000.0;
        out.push(Lead {
            label: def.label.clone(),
            samples_uv: values.iter().map(|v| (*v as f64 * scale) as f32).collect(),
            derived: false,
        });
    }
    if let Some(other) = out
        .iter()
        .find(|l| l.samples_uv.len() != out[0].samples_uv.len())
    {
        // Only a 0-based range can give different counts: the data disagree with it.
        return Err(err(format!(
            "lead {} holds {} samples but lead {} holds {}",
            out[0].label,
            out[0].samples_uv.len(),
            other.label,
            other.samples_uv.len()
        )));
    }
    Ok(Rhythm {
        sample_rate_hz: 1_000_000.0 / f64::from(interval_us),
        leads: out,
    })
}

/// One lead's coded values: the first count of [`LeadDefinition::counts`] that the
/// data hold. A count the data cannot hold is refused with the error for the most
/// likely count, which names what is missing.
fn decode_lead(
    coding: &Coding,
    data: &[u8],
    def: &LeadDefinition,
    len: usize,
) -> Result<Vec<i64>, EcgError> {
    let mut first_error = None;
    for n in def.counts() {
        // Every code is at least one bit: refuse before allocating for the count.
        if n > len.saturating_mul(8) {
            first_error.get_or_insert_with(|| {
                scp_error(
                    Some(6),
                    format!(
                        "lead {} declares {n} samples but its {len} bytes hold at most {}",
                        def.label,
                        len * 8
                    ),
                )
            });
            continue;
        }
        match huffman::decode(coding, data, n, 6, &def.label) {
            Ok(values) => return Ok(values),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error
        .unwrap_or_else(|| scp_error(Some(6), format!("lead {} has no samples", def.label))))
}

/// First differences: x[n] = x[n-1] + d[n]; second differences: x[n] = d[n] +
/// 2x[n-1] - x[n-2]. The first one or two values are stored as they are. `None` when
/// the sum leaves the 32-bit range no cart produces.
fn undo_differences(mut v: Vec<i64>, order: u8) -> Option<Vec<i64>> {
    const LIMIT: i64 = i32::MAX as i64;
    match order {
        1 => {
            for i in 1..v.len() {
                v[i] = v[i].checked_add(v[i - 1])?;
                if v[i].abs() > LIMIT {
                    return None;
                }
            }
        }
        2 => {
            for i in 2..v.len() {
                v[i] = v[i]
                    .checked_add(v[i - 1].checked_mul(2)?)?
                    .checked_sub(v[i - 2])?;
                if v[i].abs() > LIMIT {
                    return None;
                }
            }
        }
        _ => {}
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecg_scp_differences_are_undone() {
        assert_eq!(undo_differences(vec![5, 1, -2], 1), Some(vec![5, 6, 4]));
        // x = 1, 3, 6, 10: second differences 1, 3, 1, 1.
        assert_eq!(
            undo_differences(vec![1, 3, 1, 1], 2),
            Some(vec![1, 3, 6, 10])
        );
        assert_eq!(undo_differences(vec![i32::MAX as i64, 1], 1), None);
    }

    #[test]
    fn ecg_scp_reference_beat_subtraction_is_refused_by_name() {
        let mut s3 = vec![1u8, 0x01];
        s3.extend_from_slice(&[1, 0, 0, 0, 10, 0, 0, 0, 1]);
        let err = read_lead_definitions(&s3)
            .expect_err("flag set")
            .to_string();
        assert!(err.contains("reference beat subtraction"), "{err}");
        assert!(err.contains("not supported"), "{err}");
    }
}
