//! Tokenizing an ER7 message: separators, character set, segments, fields, escapes.

use super::Hl7Error;

/// The delimiters of a message, from MSH-1 (field) and MSH-2 (the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    /// Field separator (MSH-1), usually `|`.
    pub field: char,
    /// Component separator, usually `^`.
    pub component: char,
    /// Repetition separator, usually `~`.
    pub repetition: char,
    /// Escape character, usually `\`.
    pub escape: char,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: char,
}

impl Default for Separators {
    fn default() -> Self {
        Separators {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
        }
    }
}

/// How a message's bytes were (or are to be) turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (MSH-18 `UNICODE UTF-8` or `UNICODE`).
    Utf8,
    /// GB18030 (MSH-18 `GB18030`, `GB 18030-2000`, `GBK`; GBK is a subset).
    Gb18030,
    /// ISO-8859-1 (MSH-18 `8859/1`, or `ASCII`, of which it is a superset).
    Latin1,
    /// MSH-18 absent: UTF-8 when the bytes are valid UTF-8, else ISO-8859-1.
    Unspecified,
}

impl Charset {
    /// The character set MSH-18 names; `Ok(Unspecified)` when absent, an error for one we
    /// cannot decode. Spelling is forgiven (case, spaces, `-` and `_`), since senders vary.
    pub fn from_msh18(name: Option<&str>) -> Result<Charset, Hl7Error> {
        let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
            return Ok(Charset::Unspecified);
        };
        let normalized: String = name
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        match normalized.as_str() {
            "UNICODEUTF8" | "UNICODE" | "UTF8" => Ok(Charset::Utf8),
            "GB18030" | "GB180302000" | "GB180302005" | "GBK" => Ok(Charset::Gb18030),
            "8859/1" | "ISO88591" | "ISOIR100" | "ASCII" | "USASCII" => Ok(Charset::Latin1),
            _ => Err(Hl7Error::UnsupportedCharset(name.to_string())),
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Gb18030 => "GB18030",
            Charset::Latin1 => "ISO-8859-1",
            Charset::Unspecified => "UTF-8 or ISO-8859-1",
        }
    }

    /// Decode strictly; `None` if the bytes are not valid in this character set.
    fn decode_strict(self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_string),
            Charset::Gb18030 => encoding_rs::GB18030
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|s| s.into_owned()),
            Charset::Latin1 => Some(latin1(bytes)),
            Charset::Unspecified => Some(
                std::str::from_utf8(bytes)
                    .map(str::to_string)
                    .unwrap_or_else(|_| latin1(bytes)),
            ),
        }
    }

    /// Decode, or say why not.
    fn decode(self, bytes: &[u8]) -> Result<String, Hl7Error> {
        if let Some(text) = self.decode_strict(bytes) {
            return Ok(text);
        }
        let reason = match self {
            Charset::Utf8 => match std::str::from_utf8(bytes) {
                Err(e) => format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                Ok(_) => "invalid UTF-8".into(),
            },
            _ => "byte sequences that are not valid in it".into(),
        };
        Err(Hl7Error::Charset {
            charset: self.name().into(),
            reason,
        })
    }

    /// Encode text for a message in this character set. GB18030 covers all of Unicode;
    /// ISO-8859-1 writes `?` for what it cannot hold.
    pub fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Charset::Utf8 | Charset::Unspecified => text.as_bytes().to_vec(),
            Charset::Gb18030 => encoding_rs::GB18030.encode(text).0.into_owned(),
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
        }
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// One parsed message: the decoded text, its separators and its segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    text: String,
    separators: Separators,
    charset: Charset,
    segments: Vec<Segment>,
    msh: Msh,
}

/// The message header (MSH) fields the receiving side needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Msh {
    /// MSH-3. Hierarchic designators are given as text: unescaped components joined by
    /// `^` (usually just the namespace ID).
    pub sending_application: String,
    /// MSH-4, as MSH-3.
    pub sending_facility: String,
    /// MSH-5, as MSH-3.
    pub receiving_application: String,
    /// MSH-6, as MSH-3.
    pub receiving_facility: String,
    /// MSH-7 (HL7 TS), when present.
    pub timestamp: Option<String>,
    /// MSH-9.1, e.g. `ORU` (empty when MSH-9 is missing).
    pub message_code: String,
    /// MSH-9.2, e.g. `R01`.
    pub trigger_event: String,
    /// MSH-9.3, e.g. `ORU_R01`, when present.
    pub message_structure: Option<String>,
    /// MSH-10, the message control ID (required).
    pub control_id: String,
    /// MSH-11.1, e.g. `P` (empty when missing).
    pub processing_id: String,
    /// MSH-12.1, e.g. `2.5.1` (empty when missing).
    pub version: String,
    /// MSH-18 (first repetition), as written.
    pub charset: Option<String>,
}

impl Msh {
    /// `ORU^R01` style, for messages and logs.
    pub fn message_type(&self) -> String {
        if self.trigger_event.is_empty() {
            self.message_code.clone()
        } else {
            format!("{}^{}", self.message_code, self.trigger_event)
        }
    }

    fn from_segment(seg: &Segment) -> Result<Msh, Hl7Error> {
        let hd = |n: usize| -> String {
            seg.field(n)
                .and_then(|f| f.first())
                .map(|rep| {
                    let mut parts: Vec<String> = rep
                        .raw()
                        .split(seg.separators.component)
                        .map(|c| unescape(c, &seg.separators))
                        .collect();
                    while parts.last().is_some_and(String::is_empty) {
                        parts.pop();
                    }
                    parts.join("^")
                })
                .unwrap_or_default()
        };
        let control_id = seg.text(10).ok_or_else(|| Hl7Error::MissingField {
            segment: "MSH".into(),
            field: "MSH-10".into(),
            name: "message control ID",
        })?;
        Ok(Msh {
            sending_application: hd(3),
            sending_facility: hd(4),
            receiving_application: hd(5),
            receiving_facility: hd(6),
            timestamp: seg.component(7, 1),
            message_code: seg.component(9, 1).unwrap_or_default(),
            trigger_event: seg.component(9, 2).unwrap_or_default(),
            message_structure: seg.component(9, 3),
            control_id,
            processing_id: seg.component(11, 1).unwrap_or_default(),
            version: seg.component(12, 1).unwrap_or_default(),
            charset: seg
                .field(18)
                .and_then(|f| f.first())
                .map(|f| f.raw().trim().to_string())
                .filter(|s| !s.is_empty()),
        })
    }
}

/// One segment. Field `n` is the n-th field as HL7 numbers them; for MSH, field 1 is the
/// field separator and field 2 the encoding characters (both as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// fields[0] is the segment ID.
    fields: Vec<String>,
    separators: Separators,
    position: usize,
    ordinal: usize,
}

impl Segment {
    /// The segment ID, e.g. `OBX`.
    pub fn name(&self) -> &str {
        &self.fields[0]
    }

    /// 1-based position in the message (MSH is 1).
    pub fn position(&self) -> usize {
        self.position
    }

    /// 1-based count of segments with this name so far (the third OBX is 3).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// How error messages name this segment: `MSH`, `PID 1`, `OBX 3`.
    pub fn label(&self) -> String {
        if self.name() == "MSH" {
            "MSH".into()
        } else {
            format!("{} {}", self.name(), self.ordinal)
        }
    }

    /// The highest field number present.
    pub fn field_count(&self) -> usize {
        self.fields.len() - 1
    }

    /// The separators of the message.
    pub fn separators(&self) -> Separators {
        self.separators
    }

    /// Field `n` exactly as written (escaped, all repetitions); `None` when absent or
    /// empty.
    pub fn raw(&self, n: usize) -> Option<&str> {
        if n == 0 {
            return None;
        }
        self.fields
            .get(n)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Field `n` (all repetitions); `None` when absent or empty.
    pub fn field(&self, n: usize) -> Option<Field<'_>> {
        self.raw(n).map(|raw| Field {
            raw,
            separators: self.separators,
        })
    }

    /// Each repetition of field `n` (none when the field is empty).
    pub fn repetitions(&self, n: usize) -> Vec<Field<'_>> {
        self.field(n)
            .map(|f| f.repetitions().collect())
            .unwrap_or_default()
    }

    /// The first repetition of field `n`, unescaped and trimmed; `None` when empty.
    pub fn text(&self, n: usize) -> Option<String> {
        self.field(n)?.first()?.text()
    }

    /// Component `c` (1-based) of the first repetition of field `n`, unescaped and
    /// trimmed (subcomponent separators kept); `None` when empty.
    pub fn component(&self, n: usize, c: usize) -> Option<String> {
        self.field(n)?.component(c)?.text()
    }

    /// Subcomponent `s` of component `c` of the first repetition of field `n`.
    pub fn subcomponent(&self, n: usize, c: usize, s: usize) -> Option<String> {
        self.field(n)?.component(c)?.subcomponent(s)?.text()
    }
}

/// A field, one repetition, a component or a subcomponent, as written. Splitting and
/// unescaping happen on access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    raw: &'a str,
    separators: Separators,
}

impl<'a> Field<'a> {
    /// The text as written (escaped).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Each repetition.
    pub fn repetitions(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        let separators = self.separators;
        self.raw
            .split(separators.repetition)
            .map(move |raw| Field { raw, separators })
    }

    /// The first repetition, `None` when empty.
    pub fn first(&self) -> Option<Field<'a>> {
        self.repetitions().next().filter(|f| !f.raw.is_empty())
    }

    /// Component `c` (1-based) of the first repetition; `None` when empty.
    pub fn component(&self, c: usize) -> Option<Field<'a>> {
        let first = self
            .raw
            .split(self.separators.repetition)
            .next()
            .unwrap_or("");
        self.nth(first, self.separators.component, c)
    }

    /// Subcomponent `s` (1-based) of this value (use on a component).
    pub fn subcomponent(&self, s: usize) -> Option<Field<'a>> {
        self.nth(self.raw, self.separators.subcomponent, s)
    }

    fn nth(&self, text: &'a str, separator: char, n: usize) -> Option<Field<'a>> {
        let raw = text.split(separator).nth(n.checked_sub(1)?)?;
        (!raw.is_empty()).then_some(Field {
            raw,
            separators: self.separators,
        })
    }

    /// Unescaped and trimmed; `None` when that leaves nothing.
    pub fn text(&self) -> Option<String> {
        let text = unescape(self.raw, &self.separators);
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    }
}

/// Replace the escape sequences `\F\ \S\ \T\ \R\ \E\` (with this message's escape
/// character) by the separators they stand for, and `\.br\` by a line break. Other
/// sequences (highlighting, hexadecimal data, locally defined ones) and an unterminated
/// escape are kept as written: dropping them could change what a value says.
pub fn unescape(raw: &str, separators: &Separators) -> String {
    let esc = separators.escape;
    if !raw.contains(esc) {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let sequence = &after[..end];
        match sequence {
            "F" => out.push(separators.field),
            "S" => out.push(separators.component),
            "T" => out.push(separators.subcomponent),
            "R" => out.push(separators.repetition),
            "E" => out.push(esc),
            ".br" => out.push('\n'),
            _ => {
                out.push(esc);
                out.push_str(sequence);
                out.push(esc);
            }
        }
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Escape text for use as a field value: separators and the escape character become
/// escape sequences, line breaks `\.br\`, other control characters are dropped (they
/// would end a segment or corrupt the frame).
pub fn escape(text: &str, separators: &Separators) -> String {
    let esc = separators.escape;
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let sequence = if c == esc {
            Some("E")
        } else if c == separators.field {
            Some("F")
        } else if c == separators.component {
            Some("S")
        } else if c == separators.subcomponent {
            Some("T")
        } else if c == separators.repetition {
            Some("R")
        } else {
            None
        };
        if let Some(seq) = sequence {
            out.push(esc);
            out.push_str(seq);
            out.push(esc);
        } else if c == '\r' || c == '\n' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push(esc);
            out.push_str(".br");
            out.push(esc);
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

impl Message {
    /// SHA-256 (hex) of what the message says rather than how its bytes were framed: its
    /// segments in order, each field split into repetitions, components and
    /// subcomponents, unescaped and written again with the standard separators, trailing
    /// empty fields and segment terminators (CR, LF or CRLF, present or not) ignored. Two
    /// sendings of one message by different clients compare equal; a changed value does
    /// not.
    pub fn content_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let std = Separators::default();
        let mut hash = Sha256::new();
        for segment in &self.segments {
            let mut fields: Vec<String> = vec![segment.name().to_string()];
            // MSH-1 and MSH-2 are the separators themselves: written canonically.
            let first = if segment.name() == "MSH" {
                fields.push("^~\\&".to_string());
                3
            } else {
                1
            };
            for n in first..=segment.field_count() {
                fields.push(canonical_field(
                    segment.raw(n).unwrap_or(""),
                    &self.separators,
                    &std,
                ));
            }
            while fields.last().is_some_and(String::is_empty) {
                fields.pop();
            }
            hash.update(fields.join("|").as_bytes());
            hash.update(b"\r");
        }
        hex::encode(hash.finalize())
    }
}

/// One field's text split by `from`'s separators, each piece unescaped and escaped again
/// with `to`'s.
fn canonical_field(raw: &str, from: &Separators, to: &Separators) -> String {
    let split_join = |text: &str, by: char, join: char, inner: &dyn Fn(&str) -> String| {
        text.split(by)
            .map(inner)
            .collect::<Vec<_>>()
            .join(&join.to_string())
    };
    let sub = |c: &str| {
        split_join(c, from.subcomponent, to.subcomponent, &|piece| {
            escape(&unescape(piece, from), to)
        })
    };
    let component = |r: &str| split_join(r, from.component, to.component, &sub);
    split_join(raw, from.repetition, to.repetition, &component)
}

impl Message {
    /// The header.
    pub fn msh(&self) -> &Msh {
        &self.msh
    }

    /// All segments in order, MSH first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// The first segment with this ID.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name() == name)
    }

    /// Every segment with this ID, in order.
    pub fn segments_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Segment> {
        self.segments.iter().filter(move |s| s.name() == name)
    }

    /// The separators from MSH-1 and MSH-2.
    pub fn separators(&self) -> Separators {
        self.separators
    }

    /// How the bytes were decoded.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The decoded message text (segment ends as received).
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// What the bytes before any decoding say: where the message is, its separators and its
/// character set.
struct Prelude<'a> {
    bytes: &'a [u8],
    separators: Separators,
    /// The MSH line's bytes (up to the first CR or LF).
    msh_line: &'a [u8],
    charset: Result<Charset, Hl7Error>,
}

/// Remove what may surround a message: a UTF-8 byte order mark, MLLP block characters
/// and blank space.
fn trim_message(bytes: &[u8]) -> &[u8] {
    let mut b = bytes;
    loop {
        if let Some(rest) = b.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
            b = rest;
        } else if let Some((first, rest)) = b.split_first() {
            if matches!(first, 0x0B | b' ' | b'\t' | b'\r' | b'\n' | 0) {
                b = rest;
            } else {
                break;
            }
        } else {
            break;
        }
    }
    while let Some((last, rest)) = b.split_last() {
        if matches!(last, 0x1C | b' ' | b'\t' | b'\r' | b'\n' | 0) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn prelude(bytes: &[u8]) -> Result<Prelude<'_>, Hl7Error> {
    let bytes = trim_message(bytes);
    if bytes.is_empty() {
        return Err(Hl7Error::Empty);
    }
    if !bytes.starts_with(b"MSH") {
        let start: String = String::from_utf8_lossy(&bytes[..bytes.len().min(20)])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        return Err(Hl7Error::NoMsh(start));
    }
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let msh_line = &bytes[..line_end];
    let separators = separators(msh_line)?;
    let charset = detect_charset(msh_line, &separators);
    Ok(Prelude {
        bytes,
        separators,
        msh_line,
        charset,
    })
}

/// MSH-1 and MSH-2, checked: printable ASCII punctuation, all different.
fn separators(line: &[u8]) -> Result<Separators, Hl7Error> {
    let bad = |why: String| Err(Hl7Error::Separators(why));
    let Some(&fs) = line.get(3) else {
        return bad("the MSH segment ends before MSH-1".into());
    };
    let usable = |b: u8| b.is_ascii_graphic() && !b.is_ascii_alphanumeric();
    if !usable(fs) {
        return bad(format!(
            "MSH-1 (field separator) {:?} is not a punctuation character",
            char::from(fs)
        ));
    }
    let encoding: Vec<u8> = line[4..]
        .iter()
        .take_while(|&&b| b != fs)
        .copied()
        .collect();
    // Four characters; v2.7 adds a fifth (truncation), which we do not use.
    if !(4..=5).contains(&encoding.len()) {
        return bad(format!(
            "MSH-2 (encoding characters) must be 4 characters, found {:?}",
            String::from_utf8_lossy(&encoding)
        ));
    }
    let mut seen = vec![fs];
    for &b in &encoding {
        if !usable(b) || seen.contains(&b) {
            return bad(format!(
                "MSH-2 (encoding characters) {:?} must be distinct punctuation characters, \
                 different from MSH-1",
                String::from_utf8_lossy(&encoding)
            ));
        }
        seen.push(b);
    }
    Ok(Separators {
        field: char::from(fs),
        component: char::from(encoding[0]),
        repetition: char::from(encoding[1]),
        escape: char::from(encoding[2]),
        subcomponent: char::from(encoding[3]),
    })
}

/// MSH-18's first repetition in a decoded MSH line.
fn msh18(line: &str, separators: &Separators) -> Option<String> {
    // "MSH", MSH-2, MSH-3, ...: MSH-n is at index n - 1.
    line.split(separators.field)
        .nth(17)
        .and_then(|f| f.split(separators.repetition).next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Which character set the message declares. MSH-18 has to be read before the message can
/// be decoded, and in GB18030 the second byte of a Chinese character may be `|`, `^`, `~`
/// or `\`: a Chinese facility name in MSH-4 would shift the fields if the line were split
/// as bytes. So the line is read as UTF-8, then GB18030, then ISO-8859-1: the first
/// reading whose MSH-18 names that same character set wins; failing that, the first
/// reading that names any character set; failing that, MSH-18 is absent.
fn detect_charset(line: &[u8], separators: &Separators) -> Result<Charset, Hl7Error> {
    let mut first_declared: Option<String> = None;
    for candidate in [Charset::Utf8, Charset::Gb18030, Charset::Latin1] {
        let Some(text) = candidate.decode_strict(line) else {
            continue;
        };
        let Some(name) = msh18(&text, separators) else {
            continue;
        };
        if Charset::from_msh18(Some(&name)).is_ok_and(|c| c == candidate) {
            return Ok(candidate);
        }
        first_declared.get_or_insert(name);
    }
    Charset::from_msh18(first_declared.as_deref())
}

/// Split a decoded line into a segment's fields.
fn split_segment(
    line: &str,
    separators: Separators,
    position: usize,
    ordinal_of: &mut std::collections::HashMap<String, usize>,
) -> Result<Segment, Hl7Error> {
    let fs = separators.field;
    let id: String = line.chars().take(3).collect();
    let valid_id = id.len() == 3
        && id.starts_with(|c: char| c.is_ascii_uppercase())
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let after = &line[id.len()..];
    if !valid_id || !(after.is_empty() || after.starts_with(fs)) {
        return Err(Hl7Error::BadSegment {
            position,
            found: line
                .chars()
                .take(20)
                .map(|c| if c.is_control() { '.' } else { c })
                .collect(),
        });
    }
    let mut fields = vec![id.clone()];
    if id == "MSH" && !after.is_empty() {
        // MSH-1 is the separator itself and MSH-2 is not split: both kept as written.
        let rest = &after[fs.len_utf8()..];
        let (encoding, rest) = match rest.find(fs) {
            Some(i) => (&rest[..i], Some(&rest[i + fs.len_utf8()..])),
            None => (rest, None),
        };
        fields.push(fs.to_string());
        fields.push(encoding.to_string());
        if let Some(rest) = rest {
            fields.extend(rest.split(fs).map(str::to_string));
        }
    } else if !after.is_empty() {
        fields.extend(after[fs.len_utf8()..].split(fs).map(str::to_string));
    }
    let ordinal = ordinal_of.entry(id).or_insert(0);
    *ordinal += 1;
    Ok(Segment {
        fields,
        separators,
        position,
        ordinal: *ordinal,
    })
}

/// Parse one message.
///
/// Separators come from MSH-1/MSH-2; segments may end with CR, LF or CRLF (blank lines
/// are skipped). The bytes are decoded by MSH-18: `UNICODE UTF-8` / `UNICODE` as UTF-8,
/// `GB18030` / `GB 18030-2000` / `GBK` as GB18030, `8859/1` as ISO-8859-1; without MSH-18
/// as UTF-8 when valid, else ISO-8859-1. A UTF-8 byte order mark and MLLP block
/// characters around the message are ignored. MSH-10 is required; everything else about
/// the content is checked by [`super::lab_results`]. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<Message, Hl7Error> {
    let prelude = prelude(bytes)?;
    let charset = prelude.charset?;
    let text = charset.decode(prelude.bytes)?;
    let separators = prelude.separators;
    let mut segments = Vec::new();
    let mut ordinals = std::collections::HashMap::new();
    for line in text.split(['\r', '\n']) {
        if line.trim().is_empty() {
            continue;
        }
        let segment = split_segment(line, separators, segments.len() + 1, &mut ordinals)?;
        if segment.name() == "MSH" && !segments.is_empty() {
            return Err(Hl7Error::Sequence(format!(
                "a second MSH at segment {}: one message per frame",
                segment.position()
            )));
        }
        segments.push(segment);
    }
    let msh = match segments.first() {
        Some(first) if first.name() == "MSH" => Msh::from_segment(first)?,
        _ => return Err(Hl7Error::NoMsh(String::new())),
    };
    Ok(Message {
        text,
        separators,
        charset,
        segments,
        msh,
    })
}

/// Read only the MSH segment, as well as it can be read, for acknowledging a message that
/// [`parse`] refuses (the ACK must echo MSH-10). An undecodable or unsupported character
/// set does not stop it: the MSH line is read as ISO-8859-1 then.
pub fn parse_header(bytes: &[u8]) -> Result<Msh, Hl7Error> {
    let prelude = prelude(bytes)?;
    let line = match prelude.charset {
        Ok(charset) => charset
            .decode_strict(prelude.msh_line)
            .unwrap_or_else(|| latin1(prelude.msh_line)),
        Err(_) => latin1(prelude.msh_line),
    };
    let mut ordinals = std::collections::HashMap::new();
    let segment = split_segment(&line, prelude.separators, 1, &mut ordinals)?;
    Msh::from_segment(&segment)
}
