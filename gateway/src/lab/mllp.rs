//! MLLP framing (`0x0B message 0x1C 0x0D`): finding messages in a TCP byte stream.
//!
//! MLLP has no length field, so a frame is whatever lies between a start block and an
//! end block. Bytes outside a frame (keep-alive newlines, the CR after the end block, a
//! sender's garbage) are skipped. A start block inside a frame means the previous frame
//! never ended: it is dropped and the new one read. A frame longer than the limit is
//! reported as soon as it passes the limit, without buffering the rest.

use std::collections::VecDeque;

/// Start block (VT).
pub const START: u8 = 0x0B;
/// End block (FS), followed by CR.
pub const END: u8 = 0x1C;

/// How many bytes of an over-long frame are kept (enough for its MSH, to answer it).
const OVERSIZE_PREFIX: usize = 64 * 1024;

/// What the byte stream yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete message (the bytes between the block characters).
    Message(Vec<u8>),
    /// A frame longer than the limit; its first bytes. Nothing after it is read.
    TooLong(Vec<u8>),
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct Deframer {
    max: usize,
    inside: bool,
    overflowed: bool,
    buf: Vec<u8>,
    events: VecDeque<Event>,
    /// Bytes skipped outside frames, excluding the CR that ends each frame.
    skipped: u64,
    /// The previous byte was an end block: one CR after it is part of the frame.
    after_end: bool,
}

impl Deframer {
    /// A deframer refusing messages longer than `max` bytes.
    pub fn new(max: usize) -> Deframer {
        Deframer {
            max,
            inside: false,
            overflowed: false,
            buf: Vec::new(),
            events: VecDeque::new(),
            skipped: 0,
            after_end: false,
        }
    }

    /// Bytes skipped outside frames so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Bytes of an unfinished frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Feed bytes as they arrive.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.overflowed {
                return;
            }
            if !self.inside {
                if self.after_end {
                    self.after_end = false;
                    if data[0] == b'\r' {
                        data = &data[1..];
                        continue;
                    }
                }
                match data.iter().position(|&b| b == START) {
                    Some(i) => {
                        self.skipped += i as u64;
                        self.inside = true;
                        self.buf.clear();
                        data = &data[i + 1..];
                    }
                    None => {
                        self.skipped += data.len() as u64;
                        return;
                    }
                }
            } else {
                let stop = data.iter().position(|&b| b == END || b == START);
                let take = stop.unwrap_or(data.len());
                if self.buf.len() + take > self.max {
                    let keep = OVERSIZE_PREFIX.saturating_sub(self.buf.len()).min(take);
                    self.buf.extend_from_slice(&data[..keep]);
                    self.buf.truncate(OVERSIZE_PREFIX);
                    self.events
                        .push_back(Event::TooLong(std::mem::take(&mut self.buf)));
                    self.overflowed = true;
                    return;
                }
                self.buf.extend_from_slice(&data[..take]);
                match stop {
                    None => return,
                    Some(i) if data[i] == END => {
                        self.events
                            .push_back(Event::Message(std::mem::take(&mut self.buf)));
                        self.inside = false;
                        self.after_end = true;
                        data = &data[i + 1..];
                    }
                    Some(i) => {
                        // A new start block: the previous frame never ended.
                        self.skipped += self.buf.len() as u64 + 1;
                        self.buf.clear();
                        data = &data[i + 1..];
                    }
                }
            }
        }
    }
}

/// Frame a message for sending.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.extend_from_slice(&[END, b'\r']);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut Deframer) -> Vec<Event> {
        std::iter::from_fn(|| d.next_event()).collect()
    }

    #[test]
    fn frames_across_reads_and_garbage_between() {
        let mut d = Deframer::new(100);
        let stream = b"\r\nnoise\x0bMSH|a\x1c\r\x0bMSH|b\x1c\r\n\x0bMSH|c\x1c";
        // Byte by byte: the split points must not matter.
        for b in stream.iter() {
            d.push(std::slice::from_ref(b));
        }
        assert_eq!(
            all(&mut d),
            vec![
                Event::Message(b"MSH|a".to_vec()),
                Event::Message(b"MSH|b".to_vec()),
                Event::Message(b"MSH|c".to_vec()),
            ]
        );
        // "\r\nnoise" and the "\n" after the second frame's CR.
        assert_eq!(d.skipped(), 8);
        let mut d = Deframer::new(100);
        d.push(stream);
        assert_eq!(all(&mut d).len(), 3);
    }

    #[test]
    fn an_unfinished_frame_is_dropped_at_the_next_start() {
        let mut d = Deframer::new(100);
        d.push(b"\x0bMSH|broken\x0bMSH|ok\x1c\r");
        assert_eq!(all(&mut d), vec![Event::Message(b"MSH|ok".to_vec())]);
        assert_eq!(d.skipped(), 11);
        d.push(b"\x0bMSH|half");
        assert_eq!(d.pending(), 8);
        assert!(all(&mut d).is_empty());
    }

    #[test]
    fn over_long_frames_are_reported_without_buffering_them() {
        let mut d = Deframer::new(10);
        d.push(b"\x0b0123456789\x1c\r");
        assert_eq!(all(&mut d), vec![Event::Message(b"0123456789".to_vec())]);
        d.push(b"\x0bMSH|0123");
        d.push(b"456789");
        assert_eq!(
            all(&mut d),
            vec![Event::TooLong(b"MSH|0123456789".to_vec())]
        );
        d.push(b"more\x1c\r\x0bMSH|x\x1c\r");
        assert!(
            all(&mut d).is_empty(),
            "nothing is read after an over-long frame"
        );
        let mut d = Deframer::new(4 * OVERSIZE_PREFIX);
        d.push(&[START]);
        d.push(&vec![b'x'; 5 * OVERSIZE_PREFIX]);
        match all(&mut d).as_slice() {
            [Event::TooLong(prefix)] => assert_eq!(prefix.len(), OVERSIZE_PREFIX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn framing_round_trip() {
        let mut d = Deframer::new(100);
        d.push(&frame(b"MSH|^~\\&|A"));
        assert_eq!(all(&mut d), vec![Event::Message(b"MSH|^~\\&|A".to_vec())]);
        assert_eq!(d.skipped(), 0);
    }
}
