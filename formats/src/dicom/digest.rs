//! Content digests of a Part 10 file computed while it streams by.
//!
//! The identity of an instance is its data set: the file meta group in front of it says
//! who wrote the file (source AE title, implementation) and differs between two senders
//! of the very same instance. So two digests are kept: one of the data set alone (whether
//! a re-sent instance is the same instance) and one of the whole file (the stored
//! original's content address). Each byte is hashed once: the file digest combines the
//! digest of the meta group with that of the data set.

use sha2::{Digest, Sha256};

/// Meta groups larger than this are not looked for: the whole file then counts as data set.
const MAX_META: usize = 64 * 1024;

/// Hashes a Part 10 stream chunk by chunk.
pub struct Part10Digest {
    meta: Sha256,
    data_set: Sha256,
    /// Bytes held back until the end of the meta group is known.
    prefix: Vec<u8>,
    /// Whether the data set hasher is being fed directly.
    in_data_set: bool,
}

/// The two digests, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256 over the SHA-256 of the meta group and that of the data set: changes with
    /// any byte of the file.
    pub file: String,
    /// SHA-256 of the bytes after the file meta group.
    pub data_set: String,
}

impl Default for Part10Digest {
    fn default() -> Self {
        Self::new()
    }
}

impl Part10Digest {
    /// Start a new stream.
    pub fn new() -> Self {
        Part10Digest {
            meta: Sha256::new(),
            data_set: Sha256::new(),
            prefix: Vec::new(),
            in_data_set: false,
        }
    }

    /// Feed the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        if self.in_data_set {
            self.data_set.update(chunk);
            return;
        }
        self.prefix.extend_from_slice(chunk);
        match meta_end(&self.prefix) {
            MetaEnd::Known(end) => {
                self.meta.update(&self.prefix[..end]);
                self.data_set.update(&self.prefix[end..]);
                self.prefix = Vec::new();
                self.in_data_set = true;
            }
            MetaEnd::NeedMore if self.prefix.len() <= MAX_META => {}
            _ => {
                // Not a recognisable Part 10 header: the whole file is the identity.
                self.data_set.update(&self.prefix);
                self.prefix = Vec::new();
                self.in_data_set = true;
            }
        }
    }

    /// The digests of everything fed.
    pub fn finish(mut self) -> Digests {
        if !self.in_data_set {
            let start = match meta_end(&self.prefix) {
                MetaEnd::Known(end) => end,
                _ => 0,
            };
            self.meta.update(&self.prefix[..start]);
            self.data_set.update(&self.prefix[start..]);
        }
        let meta = self.meta.finalize();
        let data_set = self.data_set.finalize();
        let mut file = Sha256::new();
        file.update(meta);
        file.update(data_set);
        Digests {
            file: hex::encode(file.finalize()),
            data_set: hex::encode(data_set),
        }
    }
}

enum MetaEnd {
    Known(usize),
    NeedMore,
    NotPart10,
}

/// Where the meta group ends: walk its explicit VR little endian elements.
fn meta_end(b: &[u8]) -> MetaEnd {
    if b.len() < 132 {
        return MetaEnd::NeedMore;
    }
    if &b[128..132] != b"DICM" {
        return MetaEnd::NotPart10;
    }
    let mut pos = 132;
    loop {
        if b.len() < pos + 8 {
            return MetaEnd::NeedMore;
        }
        let group = u16::from_le_bytes([b[pos], b[pos + 1]]);
        if group != 0x0002 {
            return MetaEnd::Known(pos);
        }
        let vr = &b[pos + 4..pos + 6];
        let (header, len) = if matches!(
            vr,
            b"OB"
                | b"OW"
                | b"UN"
                | b"SQ"
                | b"UT"
                | b"UC"
                | b"UR"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"SV"
                | b"UV"
        ) {
            if b.len() < pos + 12 {
                return MetaEnd::NeedMore;
            }
            (
                12,
                u32::from_le_bytes([b[pos + 8], b[pos + 9], b[pos + 10], b[pos + 11]]) as usize,
            )
        } else {
            (8, u16::from_le_bytes([b[pos + 6], b[pos + 7]]) as usize)
        };
        pos = match pos.checked_add(header).and_then(|p| p.checked_add(len)) {
            Some(p) if p <= MAX_META => p,
            _ => return MetaEnd::NotPart10,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(meta_extra: &[u8], data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        let ts = b"1.2.840.10008.1.2.1\0";
        f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', ts.len() as u8, 0]);
        f.extend_from_slice(ts);
        f.extend_from_slice(meta_extra);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn same_data_set_behind_different_meta_groups_has_one_identity() {
        let ae = |name: &[u8; 6]| {
            let mut e = vec![0x02, 0x00, 0x16, 0x00, b'A', b'E', 6, 0];
            e.extend_from_slice(name);
            e
        };
        let data = [0x08u8, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'C', b'T'];
        let a = file(&ae(b"SCU_A "), &data);
        let b = file(&ae(b"SCU_B "), &data);
        let digest = |f: &[u8], chunk: usize| {
            let mut d = Part10Digest::new();
            for c in f.chunks(chunk) {
                d.update(c);
            }
            d.finish()
        };
        let (da, db) = (digest(&a, 7), digest(&b, 1000));
        assert_ne!(da.file, db.file);
        assert_eq!(da.data_set, db.data_set);
        assert_eq!(digest(&a, 1), digest(&a, 4096), "chunking changes nothing");
    }

    #[test]
    fn non_part10_bytes_are_their_own_identity() {
        let digest = |b: &[u8]| {
            let mut d = Part10Digest::new();
            d.update(b);
            d.finish()
        };
        assert_eq!(digest(b"not dicom"), digest(b"not dicom"));
        assert_ne!(digest(b"not dicom").data_set, digest(b"not dicoM").data_set);
    }
}
