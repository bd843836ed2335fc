//! A call task's inbox, and what happens when it is full.
//!
//! Digits are the one signal a peer can flood (SIP INFO at line rate, for as long as the
//! dialog lasts), so they go through a bounded queue of [`DIGIT_QUEUE`] and are shed when the
//! call does not keep up — counted, `voxide_dtmf_shed_total` on `/metrics`. The other signals
//! (the caller left, a redirect, the ACK's answer, a REFER's outcome) come once or twice per
//! dialog or API request and are never dropped; they are read before queued digits, so a
//! flood of digits cannot hold back a hang-up.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::Signal;

/// Digits a call may have waiting before more are shed.
pub(crate) const DIGIT_QUEUE: usize = 64;

static DIGITS_SHED: AtomicU64 = AtomicU64::new(0);

/// Digits shed on this node because a call's queue was full (since the process started).
pub fn digits_shed() -> u64 {
    DIGITS_SHED.load(Ordering::Relaxed)
}

/// A call's inbox: what the dispatcher (and the hub, and an originated call's relay) sends
/// into, and what the call task reads.
pub(crate) fn channel() -> (SignalSender, Signals) {
    let (control_tx, control) = mpsc::unbounded_channel();
    let (digits_tx, digits) = mpsc::channel(DIGIT_QUEUE);
    (SignalSender { control: control_tx, digits: digits_tx }, Signals { control, digits })
}

#[derive(Debug, Clone)]
pub(crate) struct SignalSender {
    control: mpsc::UnboundedSender<Signal>,
    digits: mpsc::Sender<char>,
}

impl SignalSender {
    /// Delivers `signal` without waiting (a digit is shed if the call's queue is full);
    /// `false` once the call's task has gone.
    pub(crate) fn send(&self, signal: Signal) -> bool {
        match signal {
            Signal::Dtmf(digit) => match self.digits.try_send(digit) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    if DIGITS_SHED.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
                        tracing::warn!("a call's digit queue is full: digits are being shed");
                    }
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            },
            other => self.control.send(other).is_ok(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Signals {
    control: mpsc::UnboundedReceiver<Signal>,
    digits: mpsc::Receiver<char>,
}

impl Signals {
    /// The next signal, control signals before queued digits; `None` once every sender has
    /// gone (the dispatcher ended) and nothing is left.
    pub(crate) async fn recv(&mut self) -> Option<Signal> {
        tokio::select! {
            biased;
            signal = self.control.recv() => match signal {
                Some(signal) => Some(signal),
                None => self.digits.recv().await.map(Signal::Dtmf),
            },
            digit = self.digits.recv() => match digit {
                Some(digit) => Some(Signal::Dtmf(digit)),
                None => self.control.recv().await,
            },
        }
    }

    /// A signal already waiting, if any (control first).
    pub(crate) fn try_recv(&mut self) -> Option<Signal> {
        self.control.try_recv().ok().or_else(|| self.digits.try_recv().ok().map(Signal::Dtmf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_of_digits_is_shed_and_cannot_hold_back_a_hang_up() {
        let (tx, mut rx) = channel();
        let before = digits_shed();
        for _ in 0..DIGIT_QUEUE + 36 {
            assert!(tx.send(Signal::Dtmf('5')));
        }
        assert!(digits_shed() - before >= 36, "the digits over the queue were counted");
        assert!(tx.send(Signal::CallerGone));
        // The hang-up comes first; then the digits that fit, no more.
        assert_eq!(rx.recv().await, Some(Signal::CallerGone));
        let mut digits = 0;
        while let Some(signal) = rx.try_recv() {
            assert_eq!(signal, Signal::Dtmf('5'));
            digits += 1;
        }
        assert_eq!(digits, DIGIT_QUEUE);
        // Senders gone: what is left is read, then None.
        assert!(tx.send(Signal::Dtmf('1')));
        drop(tx);
        assert_eq!(rx.recv().await, Some(Signal::Dtmf('1')));
        assert_eq!(rx.recv().await, None);
    }
}
