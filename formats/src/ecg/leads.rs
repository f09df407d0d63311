//! Lead labels (one spelling whatever the format) and derived limb leads.

use super::Lead;

/// A limb lead from leads I and II.
type Formula = fn(f32, f32) -> f32;

/// Standard labels in display order; used to place derived leads.
const LIMB: [&str; 6] = ["I", "II", "III", "aVR", "aVL", "aVF"];

/// The label for an SCP-ECG lead identification number (EN 1064 table of lead codes).
/// ISO/IEEE 11073-10101 numbers ECG leads the same way (MDC code 131072 + n, written
/// `2:n` in older DICOM files) and DICOM's SCPECG scheme uses `5.6.3-9-n`, so this one
/// table serves all three.
pub(crate) fn lead_name_for_code(n: u32) -> Option<&'static str> {
    Some(match n {
        1 => "I",
        2 => "II",
        3 => "V1",
        4 => "V2",
        5 => "V3",
        6 => "V4",
        7 => "V5",
        8 => "V6",
        9 => "V7",
        10 => "V2R",
        11 => "V3R",
        12 => "V4R",
        13 => "V5R",
        14 => "V6R",
        15 => "V7R",
        16 => "X",
        17 => "Y",
        18 => "Z",
        19 => "CC5",
        20 => "CM5",
        21 => "LA",
        22 => "RA",
        23 => "LL",
        61 => "III",
        62 => "aVR",
        63 => "aVL",
        64 => "aVF",
        65 => "-aVR",
        66 => "V8",
        67 => "V9",
        68 => "V8R",
        69 => "V9R",
        70 => "D",
        71 => "A",
        72 => "J",
        _ => return None,
    })
}

/// One spelling for a lead label from any format: `MDC_ECG_LEAD_AVR`, `Lead aVR`,
/// `AVR` and `aVR` all become `aVR`; `DI`/`D1` become `I` (European Einthoven labels),
/// `C1`..`C6` become `V1`..`V6`. Anything else is returned trimmed, as given.
pub fn normalize_label(raw: &str) -> String {
    let trimmed = raw.trim();
    let mut s = trimmed;
    // "Lead I (Einthoven)": the parenthesis is commentary, not part of the label.
    if let Some(i) = s.find('(') {
        s = s[..i].trim_end();
    }
    for prefix in ["MDC_ECG_LEAD_", "LEAD_", "LEAD ", "Lead ", "lead "] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.trim();
            break;
        }
    }
    let upper = s.to_ascii_uppercase();
    let known = match upper.as_str() {
        "I" | "DI" | "D1" => "I",
        "II" | "DII" | "D2" => "II",
        "III" | "DIII" | "D3" => "III",
        "AVR" => "aVR",
        "AVL" => "aVL",
        "AVF" => "aVF",
        "-AVR" | "AVRNEG" => "-aVR",
        _ => {
            if let Some(n) = upper
                .strip_prefix('V')
                .or_else(|| upper.strip_prefix('C'))
                .filter(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
            {
                // V1..V9; "C" is the British name for the same chest leads.
                return format!("V{n}");
            }
            if upper.starts_with('V') && upper.ends_with('R') && upper.len() == 3 {
                return upper;
            }
            return if s.is_empty() {
                trimmed.to_string()
            } else {
                s.to_string()
            };
        }
    };
    known.to_string()
}

/// See [`super::Ecg::derive_limb_leads`].
pub(crate) fn derive_limb_leads(leads: &mut Vec<Lead>) {
    let find = |leads: &[Lead], label: &str| leads.iter().position(|l| l.label == label);
    let (Some(i1), Some(i2)) = (find(leads, "I"), find(leads, "II")) else {
        return;
    };
    let lead_i = &leads[i1].samples_uv;
    let lead_ii = &leads[i2].samples_uv;
    let n = lead_i.len().min(lead_ii.len());
    let pairs = || lead_i[..n].iter().zip(&lead_ii[..n]);
    let mut new: Vec<Lead> = Vec::new();
    let formulas: [(&str, Formula); 4] = [
        ("III", |i, ii| ii - i),
        ("aVR", |i, ii| -(i + ii) / 2.0),
        ("aVL", |i, ii| i - ii / 2.0),
        ("aVF", |i, ii| ii - i / 2.0),
    ];
    for (label, f) in formulas {
        if find(leads, label).is_none() {
            new.push(Lead {
                label: label.to_string(),
                samples_uv: pairs().map(|(a, b)| f(*a, *b)).collect(),
                derived: true,
            });
        }
    }
    if new.is_empty() {
        return;
    }
    // Insert each derived lead after the last limb lead that precedes it in the
    // standard order, so a file stored as I, II, V1..V6 reads I, II, III, aVR, aVL,
    // aVF, V1..V6.
    for lead in new {
        let rank = LIMB.iter().position(|l| *l == lead.label).unwrap_or(0);
        let at = leads
            .iter()
            .rposition(|l| LIMB[..rank].contains(&l.label.as_str()))
            .map_or(0, |p| p + 1);
        leads.insert(at, lead);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecg_label_spellings_normalise() {
        for (raw, want) in [
            ("MDC_ECG_LEAD_I", "I"),
            ("MDC_ECG_LEAD_AVR", "aVR"),
            ("MDC_ECG_LEAD_V6", "V6"),
            ("Lead I (Einthoven)", "I"),
            ("Lead aVF", "aVF"),
            ("DIII", "III"),
            ("C3", "V3"),
            ("v4r", "V4R"),
            (" AVL ", "aVL"),
            ("Pleth", "Pleth"),
            ("", ""),
        ] {
            assert_eq!(normalize_label(raw), want, "{raw:?}");
        }
        assert_eq!(lead_name_for_code(61), Some("III"));
        assert_eq!(lead_name_for_code(999), None);
    }

    #[test]
    fn ecg_derived_limb_leads_follow_einthoven_and_goldberger() {
        let lead = |label: &str, v: Vec<f32>| Lead {
            label: label.into(),
            samples_uv: v,
            derived: false,
        };
        let mut leads = vec![
            lead("I", vec![100.0, -40.0]),
            lead("II", vec![300.0, 20.0]),
            lead("V1", vec![5.0, 5.0]),
        ];
        derive_limb_leads(&mut leads);
        let labels: Vec<&str> = leads.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["I", "II", "III", "aVR", "aVL", "aVF", "V1"]);
        assert_eq!(leads[2].samples_uv, [200.0, 60.0]);
        assert_eq!(leads[3].samples_uv, [-200.0, 10.0]);
        assert_eq!(leads[4].samples_uv, [-50.0, -50.0]);
        assert_eq!(leads[5].samples_uv, [250.0, 40.0]);
        assert!(leads[2..6].iter().all(|l| l.derived));
        let before = leads.clone();
        derive_limb_leads(&mut leads);
        assert_eq!(leads, before, "second call is a no-op");

        let mut only_v = vec![lead("V1", vec![1.0])];
        derive_limb_leads(&mut only_v);
        assert_eq!(only_v.len(), 1, "nothing to derive from");
    }
}
