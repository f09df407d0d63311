//! Section 2 (Huffman tables) and decoding of Huffman-coded sample streams.
//!
//! A table is a list of code structures: prefix length, total length, a mode (0 =
//! "switch to table n", otherwise a value), a base value and the prefix itself, stored
//! bit-reversed (first transmitted bit in the least significant bit). When the total
//! length exceeds the prefix, the extra bits are the value itself in two's complement.

use super::{scp_error, u16_at, u32_at};
use crate::ecg::EcgError;

/// Number of tables that means "the default table of EN 1064 annex C".
const DEFAULT_TABLE_MARKER: u16 = 19_999;
/// Prefixes are stored in 32 bits.
const MAX_PREFIX_BITS: u8 = 32;

/// How sections 5 and 6 code their samples.
#[derive(Debug, Clone)]
pub(crate) enum Coding {
    /// Not Huffman coded: little-endian 16-bit samples.
    Raw16,
    /// Huffman coded, starting with the first table.
    Huffman(Vec<Table>),
}

/// One Huffman table, indexed by prefix length for decoding.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// `by_len[n]` lists the codes whose prefix is `n` bits long.
    by_len: Vec<Vec<Code>>,
    /// Longest prefix: past it, the bits read match no code.
    max_len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Code {
    /// Prefix bits, first transmitted bit most significant.
    prefix: u32,
    /// Bits after the prefix that carry the value itself.
    extra_bits: u8,
    /// Table number (1-based) to switch to, for mode-0 codes.
    switch_to: Option<u16>,
    value: i16,
}

/// The default table as EN 1064 lists it: (prefix bits, total bits, value, stored
/// bit-reversed prefix). 0 is `0`, ±1 is `10s`, ±2 `110s`, ..., ±8; then 8-bit and
/// 16-bit literal values after a 10-bit escape prefix.
const DEFAULT_TABLE: [(u8, u8, i16, u32); 19] = [
    (1, 1, 0, 0),
    (3, 3, 1, 1),
    (3, 3, -1, 5),
    (4, 4, 2, 3),
    (4, 4, -2, 11),
    (5, 5, 3, 7),
    (5, 5, -3, 23),
    (6, 6, 4, 15),
    (6, 6, -4, 47),
    (7, 7, 5, 31),
    (7, 7, -5, 95),
    (8, 8, 6, 63),
    (8, 8, -6, 191),
    (9, 9, 7, 127),
    (9, 9, -7, 383),
    (10, 10, 8, 255),
    (10, 10, -8, 767),
    (10, 18, 0, 511),
    (10, 26, 0, 1023),
];

impl Coding {
    /// Read section 2.
    pub(crate) fn parse(body: &[u8]) -> Result<Coding, EcgError> {
        let err = |problem: String| scp_error(Some(2), problem);
        let count =
            u16_at(body, 0).ok_or_else(|| err("too short for the number of tables".into()))?;
        if count == DEFAULT_TABLE_MARKER {
            let mut table = Table::new();
            for (prefix, total, value, code) in DEFAULT_TABLE {
                table.add(prefix, total, 1, value, code)?;
            }
            return Ok(Coding::Huffman(vec![table]));
        }
        if count == 0 {
            return Ok(Coding::Raw16);
        }
        let mut tables = Vec::new();
        let mut at = 2usize;
        for t in 1..=count {
            let n =
                u16_at(body, at).ok_or_else(|| err(format!("ends before table {t} of {count}")))?;
            at += 2;
            let needed = usize::from(n) * 9;
            let structures = body.get(at..at + needed).ok_or_else(|| {
                err(format!(
                    "table {t} declares {n} code structures ({needed} bytes) but {} remain",
                    body.len().saturating_sub(at)
                ))
            })?;
            at += needed;
            let mut table = Table::new();
            for s in structures.chunks_exact(9) {
                let value = i16::from_le_bytes([s[3], s[4]]);
                let code = u32_at(s, 5).unwrap_or_default();
                table
                    .add(s[0], s[1], s[2], value, code)
                    .map_err(|e| match e {
                        EcgError::Scp { problem, .. } => err(format!("table {t}: {problem}")),
                        other => other,
                    })?;
            }
            tables.push(table);
        }
        for table in &tables {
            for code in table.by_len.iter().flatten() {
                if let Some(to) = code.switch_to {
                    if to == 0 || usize::from(to) > tables.len() {
                        return Err(err(format!(
                            "a code switches to table {to} but there are {}",
                            tables.len()
                        )));
                    }
                }
            }
        }
        Ok(Coding::Huffman(tables))
    }
}

impl Table {
    fn new() -> Table {
        Table {
            by_len: vec![Vec::new(); usize::from(MAX_PREFIX_BITS) + 1],
            max_len: 0,
        }
    }

    fn add(
        &mut self,
        prefix_bits: u8,
        total_bits: u8,
        mode: u8,
        value: i16,
        stored_code: u32,
    ) -> Result<(), EcgError> {
        if prefix_bits == 0 || prefix_bits > MAX_PREFIX_BITS || total_bits < prefix_bits {
            return Err(scp_error(
                Some(2),
                format!("code structure with {prefix_bits} prefix bits of {total_bits}"),
            ));
        }
        let extra_bits = total_bits - prefix_bits;
        if extra_bits > 32 {
            return Err(scp_error(
                Some(2),
                format!("code with {extra_bits} value bits (at most 32)"),
            ));
        }
        // Stored least significant bit first: reverse into transmission order.
        let prefix = stored_code.reverse_bits() >> (32 - u32::from(prefix_bits));
        let switch_to = (mode == 0).then_some(value as u16);
        self.max_len = self.max_len.max(usize::from(prefix_bits));
        self.by_len[usize::from(prefix_bits)].push(Code {
            prefix,
            extra_bits,
            switch_to,
            value,
        });
        Ok(())
    }
}

/// Reads bits most significant first.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    /// `n` bits (n ≤ 32) as a two's complement number.
    fn signed(&mut self, n: u8) -> Option<i64> {
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        if n == 0 {
            return Some(0);
        }
        let sign = 1u64 << (n - 1);
        Some(if v & sign != 0 {
            v as i64 - (1i64 << n)
        } else {
            v as i64
        })
    }
}

/// Decode `n` samples of one lead from `data`. The caller has checked that `n` is
/// possible for the number of bytes (at least one bit per sample).
pub(crate) fn decode(
    coding: &Coding,
    data: &[u8],
    n: usize,
    section: u16,
    lead: &str,
) -> Result<Vec<i64>, EcgError> {
    let mut out = Vec::with_capacity(n);
    let tables = match coding {
        Coding::Raw16 => {
            if data.len() / 2 < n {
                return Err(scp_error(
                    Some(section),
                    format!(
                        "lead {lead} has {} bytes for {n} 16-bit samples",
                        data.len()
                    ),
                ));
            }
            out.extend(
                data.chunks_exact(2)
                    .take(n)
                    .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]]))),
            );
            return Ok(out);
        }
        Coding::Huffman(tables) => tables,
    };
    let mut bits = Bits { data, pos: 0 };
    let mut table = tables
        .first()
        .ok_or_else(|| scp_error(Some(2), "no Huffman table".into()))?;
    let ended = |bits: &Bits, got: usize| {
        scp_error(
            Some(section),
            format!(
                "data for lead {lead} end at bit {} after {got} of {n} samples",
                bits.pos
            ),
        )
    };
    while out.len() < n {
        let start = bits.pos;
        let mut prefix = 0u32;
        let mut len = 0usize;
        let code = loop {
            prefix = (prefix << 1) | bits.bit().ok_or_else(|| ended(&bits, out.len()))?;
            len += 1;
            if let Some(code) = table.by_len[len].iter().find(|c| c.prefix == prefix) {
                break *code;
            }
            if len >= table.max_len {
                return Err(scp_error(
                    Some(section),
                    format!("Huffman code not in table at bit {start} (lead {lead})"),
                ));
            }
        };
        if let Some(to) = code.switch_to {
            // Checked against the number of tables when section 2 was read.
            table = &tables[usize::from(to) - 1];
            continue;
        }
        let value = if code.extra_bits > 0 {
            bits.signed(code.extra_bits)
                .ok_or_else(|| ended(&bits, out.len()))?
        } else {
            i64::from(code.value)
        };
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_coding() -> Coding {
        Coding::parse(&DEFAULT_TABLE_MARKER.to_le_bytes()).expect("default table")
    }

    #[test]
    fn ecg_scp_default_table_decodes_prefixes_and_literals() {
        // 0 | 100 (1) | 1101 (-2) | 1111111110 + 0x85 (-123) | 0 padding
        let bits = "0100110111111111101000010100000";
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for (i, b) in bits.bytes().enumerate() {
            if b == b'1' {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        let got = decode(&default_coding(), &bytes, 4, 6, "I").expect("decodes");
        assert_eq!(got, [0, 1, -2, -123]);
        let err = decode(&default_coding(), &bytes, 40, 6, "I")
            .expect_err("runs out")
            .to_string();
        assert!(
            err.starts_with("SCP section 6: data for lead I end at bit"),
            "{err}"
        );
    }

    #[test]
    fn ecg_scp_custom_tables_are_checked() {
        // One table, one code: prefix "1" (1 bit) meaning 7; the stream "10" has a 0
        // that is in no code.
        let mut s2 = vec![1, 0, 1, 0];
        s2.extend_from_slice(&[1, 1, 1, 7, 0, 1, 0, 0, 0]);
        let coding = Coding::parse(&s2).expect("custom table");
        assert_eq!(decode(&coding, &[0x80], 1, 6, "V1").expect("one"), [7]);
        let err = decode(&coding, &[0x80], 2, 6, "V1")
            .expect_err("0 is not a code")
            .to_string();
        assert!(
            err.contains("Huffman code not in table at bit 1 (lead V1)"),
            "{err}"
        );

        // A switch to a table that does not exist.
        let mut bad = vec![1, 0, 1, 0];
        bad.extend_from_slice(&[1, 1, 0, 5, 0, 1, 0, 0, 0]);
        let err = Coding::parse(&bad).expect_err("bad switch").to_string();
        assert!(err.contains("switches to table 5"), "{err}");

        // A table claiming more structures than the section holds.
        let err = Coding::parse(&[1, 0, 0xFF, 0xFF])
            .expect_err("short")
            .to_string();
        assert!(err.contains("65535 code structures"), "{err}");
    }
}
