//! What a later result does to a critical-value (危急值) alert already sent.
//!
//! A laboratory sends a result, the hub finds it critical and alerts the township; then
//! the laboratory corrects it (OBX-11 `C`) or finalises a preliminary value. The alert is
//! one chain of signed versions under one delivery id, never a second alert for the same
//! test, and never left asking a clinician to treat a value the laboratory withdrew:
//!
//! | the alert now says | the new result | follow-up |
//! |---|---|---|
//! | critical value *v* | critical, same value (P → F) | [`FollowUp::Keep`]: nothing new to tell |
//! | critical value *v* | critical, another value | [`FollowUp::Replace`]: a new version, to acknowledge again |
//! | critical value *v* | not critical | [`FollowUp::Withdraw`]: a new version saying so, nothing to acknowledge |
//! | withdrawn | not critical | [`FollowUp::Keep`] |
//! | withdrawn | critical | [`FollowUp::Replace`]: critical again |
//!
//! Values are compared as shown (trimmed text and unit), since that is what the
//! clinician read.

/// What the alert's current version says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertNow<'a> {
    /// A critical value, as shown with its unit.
    Critical {
        /// The value's text.
        value: &'a str,
        /// Its unit.
        unit: &'a str,
    },
    /// The alert was withdrawn: the value is no longer critical.
    Withdrawn,
}

/// The result that replaced the alerted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewResult<'a> {
    /// Critical by the limits or the laboratory's flags.
    pub critical: bool,
    /// The value's text.
    pub value: &'a str,
    /// Its unit.
    pub unit: &'a str,
}

/// What to do with the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// The alert still says what is true: the new result is covered by it.
    Keep,
    /// A new version with the new critical value, acknowledged anew.
    Replace,
    /// A new version withdrawing the alert, with the corrected value.
    Withdraw,
}

/// The follow-up for a result that replaced the one an alert is about.
pub fn follow_up(now: AlertNow<'_>, new: NewResult<'_>) -> FollowUp {
    match (now, new.critical) {
        (AlertNow::Critical { value, unit }, true) => {
            if value.trim() == new.value.trim() && unit.trim() == new.unit.trim() {
                FollowUp::Keep
            } else {
                FollowUp::Replace
            }
        }
        (AlertNow::Critical { .. }, false) => FollowUp::Withdraw,
        (AlertNow::Withdrawn, false) => FollowUp::Keep,
        (AlertNow::Withdrawn, true) => FollowUp::Replace,
    }
}

/// Is this OBX-11 result status a correction of a value sent before?
pub fn is_correction(status: Option<&str>) -> bool {
    status.is_some_and(|s| s.trim().eq_ignore_ascii_case("C"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K68: AlertNow<'static> = AlertNow::Critical {
        value: "6.8",
        unit: "mmol/L",
    };

    fn new(critical: bool, value: &'static str) -> NewResult<'static> {
        NewResult {
            critical,
            value,
            unit: "mmol/L",
        }
    }

    #[test]
    fn the_table() {
        let cases = [
            (K68, new(true, "6.8"), FollowUp::Keep),
            (K68, new(true, " 6.8 "), FollowUp::Keep),
            (K68, new(true, "7.4"), FollowUp::Replace),
            (K68, new(false, "4.6"), FollowUp::Withdraw),
            // The same number is a different statement in another unit.
            (
                K68,
                NewResult {
                    critical: true,
                    value: "6.8",
                    unit: "mEq/L",
                },
                FollowUp::Replace,
            ),
            (AlertNow::Withdrawn, new(false, "4.5"), FollowUp::Keep),
            (AlertNow::Withdrawn, new(true, "7.0"), FollowUp::Replace),
        ];
        for (now, result, want) in cases {
            assert_eq!(follow_up(now, result), want, "{now:?} then {result:?}");
        }
    }

    #[test]
    fn corrections() {
        assert!(is_correction(Some("C")));
        assert!(is_correction(Some(" c")));
        assert!(!is_correction(Some("F")));
        assert!(!is_correction(None));
    }
}
