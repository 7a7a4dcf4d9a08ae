// indymilter – asynchronous milter library
// Copyright © 2021–2022 David Bürgin <dbuergin@gluet.ch>
//
// This program is free software: you can redistribute it and/or modify it under
// the terms of the GNU General Public License as published by the Free Software
// Foundation, either version 3 of the License, or (at your option) any later
// version.
//
// This program is distributed in the hope that it will be useful, but WITHOUT
// ANY WARRANTY; without even the implied warranty of MERCHANTABILITY or FITNESS
// FOR A PARTICULAR PURPOSE. See the GNU General Public License for more
// details.
//
// You should have received a copy of the GNU General Public License along with
// this program. If not, see <https://www.gnu.org/licenses/>.

use crate::message::{self, reply::Reply, Message};
use std::{
    io::{self, ErrorKind},
    sync::Arc,
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::Mutex,
    time,
};
use tracing::trace;

// An MTA holds one connection per SMTP session in progress, most of them idle,
// so a connection that waits holds no buffer, and no task or channel of its
// own. It waits for the next packet by reading its header alone; the rest of
// what the MTA sent (the packets of a stage are a few hundred bytes) is then
// read into a buffer of `READ_BUFFER_LEN`, released as soon as it has been
// consumed. A payload that does not fit is read straight into its own buffer.
// A reply is written in one piece (`message::write`): no write buffer either.
const READ_BUFFER_LEN: usize = 512;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

struct StreamHandler {
    stream: Box<dyn Stream>,
    // The bytes read but not yet consumed are `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
}

impl StreamHandler {
    // Fills `out` with buffered bytes, reading more as needed: straight into
    // `out` when it is a packet header (`header`) or too large for the buffer.
    async fn take(&mut self, out: &mut [u8], header: bool) -> io::Result<()> {
        let mut filled = 0;
        loop {
            let n = (out.len() - filled).min(self.buffer.len() - self.start);
            out[filled..filled + n].copy_from_slice(&self.buffer[self.start..self.start + n]);
            self.start += n;
            filled += n;
            if self.start == self.buffer.len() {
                self.buffer = Vec::new();
                self.start = 0;
            }
            if filled == out.len() {
                return Ok(());
            }
            let rest = &mut out[filled..];
            if header || rest.len() >= READ_BUFFER_LEN {
                return self.stream.read_exact(rest).await.map(|_| ());
            }
            let mut buffer = Vec::with_capacity(READ_BUFFER_LEN);
            if self.stream.read_buf(&mut buffer).await? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            self.buffer = buffer;
        }
    }

    // Reads a message as `message::read` does, through the buffer.
    async fn read_message(&mut self) -> io::Result<Message> {
        let mut header = [0; 5];
        self.take(&mut header, true).await?;
        let [l0, l1, l2, l3, kind] = header;

        let len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3]))
            .expect("unsupported pointer size")
            .saturating_sub(1);

        if len > Message::MAX_BUFFER_LEN {
            return Err(ErrorKind::InvalidData.into());
        }

        let mut buffer = vec![0; len];
        self.take(&mut buffer, false).await?;

        Ok(Message::new(kind, buffer))
    }
}

// A connection can be cloned. Cloned connections all share the stream, which
// is closed when the last of them is dropped (`shutdown` closes it earlier).
//
// Note that in a milter session, a connection is only ever read from or written
// to serially. However, during the eom stage, a clone of the connection is used
// to write replies from the eom callback.
#[derive(Clone)]
pub struct Connection {
    handler: Arc<Mutex<StreamHandler>>,
    timeout: Duration,
}

impl Connection {
    pub fn new<S>(stream: S, timeout: Duration) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = StreamHandler {
            stream: Box::new(stream),
            buffer: Vec::new(),
            start: 0,
        };

        Self {
            handler: Arc::new(Mutex::new(handler)),
            timeout,
        }
    }

    pub async fn read_message(&self) -> io::Result<Message> {
        let read = async { self.handler.lock().await.read_message().await };

        let result = match time::timeout(self.timeout, read).await {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        };

        if let Ok(msg) = &result {
            trace!(?msg, "message read");
        }

        result
    }

    pub async fn write_reply(&self, reply: Reply) -> io::Result<()> {
        let msg = reply.into_message();

        self.write_message(msg).await
    }

    pub async fn write_message(&self, msg: Message) -> io::Result<()> {
        trace!(?msg, "writing message");

        let write = async {
            let mut handler = self.handler.lock().await;
            message::write(&mut handler.stream, msg).await
        };

        match time::timeout(self.timeout, write).await {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        }
    }

    // Shuts the stream down; an error is no longer of interest.
    pub async fn shutdown(&self) {
        let _ = self.handler.lock().await.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use tokio::{io::AsyncReadExt, join};

    #[tokio::test]
    async fn multiple_connections() {
        let (mut client, stream) = tokio::io::duplex(100);

        let conn1 = Connection::new(stream, Duration::from_secs(30));
        let conn2 = conn1.clone();

        // First, read from and write to the first connection.

        client.write_all(b"\0\0\0\x03xyz").await.unwrap();

        let msg = conn1.read_message().await.unwrap();
        assert_eq!(msg, Message::new(b'x', "yz"));
        conn1.write_message(msg).await.unwrap();

        let mut buffer = vec![0; 7];
        client.read_exact(&mut buffer).await.unwrap();
        assert_eq!(buffer, b"\0\0\0\x03xyz");

        // Drop the first connection and continue using the second connection.

        drop(conn1);

        let msg = Message::new(b'x', "abc");
        conn2.write_message(msg).await.unwrap();

        let mut buffer = vec![0; 8];
        client.read_exact(&mut buffer).await.unwrap();
        assert_eq!(buffer, b"\0\0\0\x04xabc");

        // Drop the second and last remaining connection, closing the stream.

        drop(conn2);

        let e = client.read_u8().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn connection_timeout() {
        let timeout = Duration::from_secs(30);

        let (mut client, stream) = tokio::io::duplex(100);
        let conn = Connection::new(stream, timeout);

        // Both the `Connection` and the client end of the duplex stream are
        // moved into the futures. The connection is therefore dropped and
        // closes after 30 seconds. The client write then fails as it attempts
        // to write a few seconds later.

        time::pause();

        let (stream_result, client_result) =
            join!(async move { conn.read_message().await }, async move {
                client.write_all(b"\0\0\0\x05").await.unwrap();
                time::sleep(timeout + Duration::from_secs(5)).await;
                client.write_all(b"Xyzabc").await
            },);

        time::resume();

        let e = stream_result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);

        let e = client_result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    }
}
