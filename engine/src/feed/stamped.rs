//! The feed socket, stamped: a stream that reads the wall clock once per socket read that
//! returned bytes, so that every message completed by one read gets that read's receive
//! timestamp (`recv_ts`) without a clock read per message. At high rates one read holds
//! hundreds of messages.

use std::io::{self, Read, Write};
use std::ops::Deref;

use crate::clock;

/// A stream that remembers when its last read returned bytes.
#[derive(Debug)]
pub(crate) struct Stamped<S> {
    inner: S,
    read_ns: u64,
}

impl<S> Stamped<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, read_ns: 0 }
    }

    /// Wall-clock ns since the Unix epoch of the last read that returned bytes (0 before any).
    #[inline]
    pub(crate) fn read_ns(&self) -> u64 {
        self.read_ns
    }
}

impl<S> Deref for Stamped<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.inner
    }
}

impl<S: Read> Read for Stamped<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.read_ns = clock::realtime_ns();
        }
        Ok(n)
    }
}

impl<S: Write> Write for Stamped<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_reads_that_return_bytes() {
        let mut s = Stamped::new(&b"abc"[..]);
        assert_eq!(s.read_ns(), 0);
        let mut buf = [0u8; 2];
        assert_eq!(s.read(&mut buf).unwrap(), 2);
        let first = s.read_ns();
        assert!(first > 0);
        assert_eq!(s.read(&mut buf).unwrap(), 1);
        assert!(s.read_ns() >= first);
        let second = s.read_ns();
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        assert_eq!(s.read_ns(), second, "an empty read stamps nothing");
        assert_eq!(*s, &b""[..]);
    }
}
