//! SAM frame codec: building frames and reassembling them from a byte stream.

use zeroize::{Zeroize, Zeroizing};

use crate::framing::{FrameAssembler, discard_garbage};

/// Every frame starts with these 5 bytes (3 sync bytes, then `96 69`).
pub const PREAMBLE: [u8; 5] = [0xAA, 0xAA, 0xAA, 0x96, 0x69];

/// The largest length field accepted. Real replies are at most 2314 (text + photo + two
/// fingerprint templates); anything far above that is a corrupted header, and bounding it
/// bounds the buffer.
pub const MAX_BODY_LEN: usize = 8192;

const HEADER_LEN: usize = 7;

/// XOR of `bytes`.
pub fn xor_checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// Builds a frame around `body` (`CMD Para data` or `SW1 SW2 SW3 data`).
///
/// # Panics
/// Never for bodies up to [`MAX_BODY_LEN`]; longer bodies are truncated to it (callers in
/// this crate never build them).
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let body = body.get(..body.len().min(MAX_BODY_LEN - 1)).unwrap_or(body);
    let len = u16::try_from(body.len() + 1).unwrap_or(u16::MAX);
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len() + 1);
    frame.extend_from_slice(&PREAMBLE);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    let chk = xor_checksum(frame.get(5..).unwrap_or_default());
    frame.push(chk);
    frame
}

/// A checked frame: its body without preamble, length and checksum. Wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SamFrame {
    body: Zeroizing<Vec<u8>>,
}

impl SamFrame {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn into_body(self) -> Zeroizing<Vec<u8>> {
        self.body
    }
}

impl std::fmt::Debug for SamFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Frames carry names, addresses and ID numbers: show only the shape.
        write!(f, "SamFrame({} body bytes)", self.body.len())
    }
}

/// A frame that was dropped while reassembling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SamFrameError {
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("frame length field {0} is out of range")]
    Length(usize),
}

/// Reassembles SAM frames from a byte stream: skips leading garbage by scanning for the
/// preamble, waits for the announced length, verifies the checksum.
#[derive(Default)]
pub struct SamDeframer {
    buf: Zeroizing<Vec<u8>>,
}

impl SamDeframer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl FrameAssembler for SamDeframer {
    type Frame = SamFrame;
    type Error = SamFrameError;

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next_frame(&mut self) -> Option<Result<SamFrame, SamFrameError>> {
        discard_garbage(&mut self.buf, &PREAMBLE)?;
        let len_bytes: [u8; 2] = self.buf.get(5..HEADER_LEN)?.try_into().ok()?;
        let len = usize::from(u16::from_be_bytes(len_bytes));
        if len == 0 || len > MAX_BODY_LEN {
            self.buf.drain(..PREAMBLE.len());
            return Some(Err(SamFrameError::Length(len)));
        }
        let total = HEADER_LEN + len;
        let frame = self.buf.get(..total)?;
        let (covered, chk) = frame.split_at(total - 1);
        let expected = xor_checksum(covered.get(5..).unwrap_or_default());
        if chk.first() != Some(&expected) {
            // Skip only the preamble: if the length was the corrupted part, a real frame
            // may start inside what the length claimed.
            self.buf.drain(..PREAMBLE.len());
            return Some(Err(SamFrameError::Checksum));
        }
        let body = Zeroizing::new(covered.get(HEADER_LEN..).unwrap_or_default().to_vec());
        self.buf.drain(..total);
        Some(Ok(SamFrame { body }))
    }

    fn reset(&mut self) {
        self.buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(d: &mut SamDeframer) -> Vec<Result<Vec<u8>, SamFrameError>> {
        std::iter::from_fn(|| d.next_frame())
            .map(|r| r.map(|f| f.body().to_vec()))
            .collect()
    }

    #[test]
    fn encodes_known_error_frame() {
        // "Error frames are 11 bytes: AA AA AA 96 69 00 04 00 00 <SW3> <04^SW3>".
        assert_eq!(
            encode_frame(&[0, 0, 0x80]),
            [
                0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x04, 0x00, 0x00, 0x80, 0x84
            ]
        );
    }

    #[test]
    fn resyncs_after_stray_byte_and_split_delivery() {
        // The stray `AA 00` seen in one program's log, then a frame delivered byte by byte.
        let frame = encode_frame(&[0, 0, 0x90]);
        let mut stream = vec![0xAA, 0x00];
        stream.extend_from_slice(&frame);
        let mut d = SamDeframer::new();
        let mut got = Vec::new();
        for b in stream {
            d.push(&[b]);
            got.extend(frames_of(&mut d));
        }
        assert_eq!(got, vec![Ok(vec![0, 0, 0x90])]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn coalesced_frames_and_bad_checksum() {
        let mut bad = encode_frame(&[0, 0, 0x90, 1, 2]);
        *bad.last_mut().expect("non-empty") ^= 0xFF;
        let mut stream = encode_frame(&[0, 0, 0x9F, 0, 0, 0, 0]);
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&encode_frame(&[0, 0, 0x81]));
        let mut d = SamDeframer::new();
        d.push(&stream);
        assert_eq!(
            frames_of(&mut d),
            vec![
                Ok(vec![0, 0, 0x9F, 0, 0, 0, 0]),
                Err(SamFrameError::Checksum),
                Ok(vec![0, 0, 0x81])
            ]
        );
    }

    #[test]
    fn absurd_length_is_dropped_not_awaited() {
        let mut d = SamDeframer::new();
        d.push(&[0xAA, 0xAA, 0xAA, 0x96, 0x69, 0xFF, 0xFF, 1, 2, 3]);
        assert_eq!(frames_of(&mut d), vec![Err(SamFrameError::Length(0xFFFF))]);
    }
}
