//! DICOM unique identifiers (PS3.5 9.1), validated before they become keys or paths.

use std::fmt;

/// A validated DICOM UID: 1 to 64 characters, digits and dots, no empty component and no
/// component with a leading zero (a lone `0` is fine).
///
/// Because only digits and dots get through, a `Uid` is safe to use in object keys,
/// file names and URL paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

/// Why a string is not a UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    /// Nothing left after trimming padding.
    #[error("UID is empty")]
    Empty,
    /// Longer than the 64 characters PS3.5 allows.
    #[error("UID {0:?} is longer than 64 characters")]
    TooLong(String),
    /// A character other than a digit or a dot.
    #[error("UID {0:?} contains a character other than digits and dots")]
    BadCharacter(String),
    /// Leading, trailing or doubled dot.
    #[error("UID {0:?} has an empty component")]
    EmptyComponent(String),
    /// A component of more than one digit starting with 0 (`1.2.03`): PS3.5 9.1 forbids
    /// it, and two spellings of one number must not be two keys.
    #[error("UID {0:?} has a component with a leading zero")]
    LeadingZero(String),
}

impl Uid {
    /// Parse a UID, ignoring the trailing NUL or space padding DICOM values carry.
    pub fn parse(raw: &str) -> Result<Self, UidError> {
        let s = raw.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
        if s.is_empty() {
            return Err(UidError::Empty);
        }
        if s.len() > 64 {
            return Err(UidError::TooLong(truncate_for_message(s)));
        }
        if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(UidError::BadCharacter(truncate_for_message(s)));
        }
        if s.split('.').any(str::is_empty) {
            return Err(UidError::EmptyComponent(s.to_string()));
        }
        if s.split('.').any(|c| c.len() > 1 && c.starts_with('0')) {
            return Err(UidError::LeadingZero(s.to_string()));
        }
        Ok(Uid(s.to_string()))
    }

    /// The UID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UID as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Uid {
    type Err = UidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uid::parse(s)
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_uids_and_strips_padding() {
        assert_eq!(
            Uid::parse("1.2.840.10008.1.2\0").unwrap().as_str(),
            "1.2.840.10008.1.2"
        );
        assert_eq!(
            Uid::parse("1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457 ")
                .unwrap()
                .as_str()
                .len(),
            46
        );
    }

    #[test]
    fn rejects_what_could_escape_a_path_or_key() {
        assert_eq!(Uid::parse(""), Err(UidError::Empty));
        assert!(matches!(
            Uid::parse("../../etc/passwd"),
            Err(UidError::BadCharacter(_))
        ));
        assert!(matches!(
            Uid::parse("1.2/3"),
            Err(UidError::BadCharacter(_))
        ));
        assert!(matches!(
            Uid::parse("1..2"),
            Err(UidError::EmptyComponent(_))
        ));
        assert!(matches!(
            Uid::parse(".1.2"),
            Err(UidError::EmptyComponent(_))
        ));
        assert!(matches!(
            Uid::parse("1.2."),
            Err(UidError::EmptyComponent(_))
        ));
        assert!(matches!(
            Uid::parse(&"1.".repeat(40)),
            Err(UidError::TooLong(_))
        ));
    }

    #[test]
    fn rejects_leading_zeros_but_not_a_lone_zero() {
        assert!(matches!(
            Uid::parse("1.2.03.4"),
            Err(UidError::LeadingZero(_))
        ));
        assert!(matches!(Uid::parse("01.2"), Err(UidError::LeadingZero(_))));
        assert!(matches!(
            Uid::parse("1.2.00"),
            Err(UidError::LeadingZero(_))
        ));
        assert!(Uid::parse("1.2.840.10008.5.1.4.1.1.2").is_ok());
        assert!(Uid::parse("1.2.826.0.1.3680043.2.1125.0.1").is_ok());
    }
}
