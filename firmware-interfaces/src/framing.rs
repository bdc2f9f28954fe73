//! The shape shared by both protocols' stream decoders, so drivers need one read loop.

/// Turns a byte stream (arriving in arbitrary pieces, possibly with leading garbage) into
/// frames. Implementations bound their buffer and resynchronise on their preamble.
pub trait FrameAssembler {
    type Frame;
    type Error;

    /// Appends received bytes.
    fn push(&mut self, bytes: &[u8]);

    /// The next complete frame, an error for a frame that was dropped (the stream is
    /// resynchronised past it), or `None` when more bytes are needed.
    fn next_frame(&mut self) -> Option<Result<Self::Frame, Self::Error>>;

    /// Forgets (and wipes) everything buffered.
    fn reset(&mut self);
}

/// Position of `needle` in `haystack`.
pub(crate) fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Drops bytes in front of `keep_from`, keeping at most `needle_len - 1` trailing bytes when
/// no preamble was found (they may be the start of one).
pub(crate) fn discard_garbage(buf: &mut Vec<u8>, needle: &[u8]) -> Option<usize> {
    match find_subslice(buf, needle) {
        Some(pos) => {
            buf.drain(..pos);
            Some(pos)
        }
        None => {
            let keep = needle.len().saturating_sub(1).min(buf.len());
            let cut = buf.len() - keep;
            buf.drain(..cut);
            None
        }
    }
}
