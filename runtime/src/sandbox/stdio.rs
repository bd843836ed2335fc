//! Guest stdout/stderr: kept in a small ring so a panic message can be reported with the
//! call's outcome, without letting a chatty flow use unbounded host memory or trap on a full
//! buffer (wasmtime-wasi's `MemoryOutputPipe` traps the guest when full).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Keeps the last `capacity` bytes written; `capacity` 0 discards everything.
#[derive(Clone, Debug)]
pub(crate) struct TailBuffer {
    capacity: usize,
    buf: Arc<Mutex<Vec<u8>>>,
}

impl TailBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        TailBuffer { capacity, buf: Arc::default() }
    }

    pub(crate) fn contents(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn append(&self, bytes: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend_from_slice(bytes);
        if buf.len() > self.capacity {
            let excess = buf.len() - self.capacity;
            buf.drain(..excess);
        }
    }
}

impl IsTerminal for TailBuffer {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailBuffer {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for TailBuffer {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(bytes);
        Poll::Ready(Ok(bytes.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
