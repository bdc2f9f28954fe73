//! One request/response exchange loop shared by both protocol engines: write a frame, then
//! read until the assembler yields a frame or the deadline passes. Read buffers are wiped.

use std::io;
use std::time::Duration;

use firmware_interfaces::framing::FrameAssembler;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::link::Link;

const READ_CHUNK: usize = 4096;

/// Why no frame came back.
#[derive(Debug)]
pub(crate) enum RecvError<E> {
    Timeout,
    /// The link failed or reached end of file: the device went away.
    Gone(io::Error),
    /// A frame arrived but was corrupt (already skipped by the assembler).
    Frame(E),
}

pub(crate) struct Framed<L, A> {
    link: L,
    assembler: A,
    /// An operation was interrupted (its future dropped): stale bytes may be in flight.
    dirty: bool,
}

impl<L: Link, A: FrameAssembler> Framed<L, A> {
    pub(crate) fn new(link: L, assembler: A) -> Self {
        Self {
            link,
            assembler,
            dirty: false,
        }
    }

    pub(crate) fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// Marks the start of an operation; if the previous one was cancelled mid-way, first
    /// discards whatever it left behind (until the line is quiet for `quiet`).
    pub(crate) async fn begin(&mut self, quiet: Duration) -> io::Result<()> {
        if std::mem::replace(&mut self.dirty, true) {
            self.discard_input(quiet).await?;
        }
        Ok(())
    }

    /// Marks the operation complete.
    pub(crate) fn end(&mut self) {
        self.dirty = false;
    }

    pub(crate) async fn discard_input(&mut self, quiet: Duration) -> io::Result<()> {
        self.assembler.reset();
        let mut buf = Zeroizing::new(vec![0u8; READ_CHUNK]);
        loop {
            match tokio::time::timeout(quiet, self.link.read(&mut buf)).await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "device closed the link",
                    ));
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.link.write_all(bytes).await?;
        self.link.flush().await
    }

    pub(crate) async fn recv(
        &mut self,
        deadline: Instant,
    ) -> Result<A::Frame, RecvError<A::Error>> {
        let mut buf = Zeroizing::new(vec![0u8; READ_CHUNK]);
        loop {
            match self.assembler.next_frame() {
                Some(Ok(frame)) => return Ok(frame),
                Some(Err(e)) => return Err(RecvError::Frame(e)),
                None => {}
            }
            let n = match tokio::time::timeout_at(deadline, self.link.read(&mut buf)).await {
                Err(_) => return Err(RecvError::Timeout),
                Ok(Ok(0)) => {
                    return Err(RecvError::Gone(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "device closed the link",
                    )));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(Err(e)) => return Err(RecvError::Gone(e)),
            };
            self.assembler.push(buf.get(..n).unwrap_or_default());
        }
    }
}
