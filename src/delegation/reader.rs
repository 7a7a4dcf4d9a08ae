//! The read buffer of a policy connection, which it holds only while requests arrive:
//! Postfix keeps a connection open between requests, and an idle one holds none. The
//! buffers are kept for the next burst in a small spare list, because making one costs
//! zeroing it (tokio's `BufReader` zeroes each new buffer: 4,000 instructions a request,
//! a sixth of the service's).

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// A buffer's size: Postfix's requests (some 30 attributes, 1 KiB or so) fit in one read;
/// a longer one takes more.
const REQUEST_BUFFER: usize = 4096;

/// Spare buffers kept at most: enough for the requests that arrive at the same moment on
/// a busy MTA, little memory (64 KiB) when the connections are idle.
const SPARE_LIMIT: usize = 16;

thread_local! {
    /// The spare buffers of the connections served on this thread (the service runs on
    /// one): a thread's own list costs no lock.
    static SPARES: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_spare() -> Box<[u8]> {
    SPARES
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| vec![0; REQUEST_BUFFER].into_boxed_slice())
}

fn give_spare(buffer: Box<[u8]>) {
    SPARES.with_borrow_mut(|spares| {
        if spares.len() < SPARE_LIMIT {
            spares.push(buffer);
        }
    });
}

/// A buffered reader over `stream` for one burst of requests, with a spare buffer,
/// given back when the reader is dropped.
pub(super) struct BurstReader<'a, S> {
    stream: &'a mut S,
    buffer: Box<[u8]>,
    /// The bytes read and not yet consumed: `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl<'a, S: AsyncRead + Unpin> BurstReader<'a, S> {
    pub(super) fn new(stream: &'a mut S) -> Self {
        Self {
            stream,
            buffer: take_spare(),
            start: 0,
            end: 0,
        }
    }

    /// Whether bytes are read and not yet consumed (a request that followed another).
    pub(super) fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    pub(super) fn get_mut(&mut self) -> &mut S {
        self.stream
    }
}

impl<S> Drop for BurstReader<'_, S> {
    fn drop(&mut self) {
        give_spare(std::mem::take(&mut self.buffer));
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BurstReader<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(out.remaining());
        out.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncBufRead for BurstReader<'_, S> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.start == this.end {
            let mut read = ReadBuf::new(&mut this.buffer);
            ready!(Pin::new(&mut *this.stream).poll_read(cx, &mut read))?;
            this.end = read.filled().len();
            this.start = 0;
        }
        Poll::Ready(Ok(&this.buffer[this.start..this.end]))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        let this = self.get_mut();
        this.start = (this.start + amount).min(this.end);
    }
}
