//! DTMF: the digits callers press, carried out of band or detected in the audio.
//!
//! - [`event`]: RFC 4733 telephone events — the payload format, a receiver that turns the
//!   redundant packet stream into exactly one digit per key press, and a sender that
//!   produces that stream.
//! - [`detect`]: an in-band detector (Goertzel filters on 8 kHz linear PCM) for peers that
//!   send DTMF as tones in the audio, as PSTN gateways often do.
//!
//! Digits are `char`s: `'0'..='9'`, `'*'`, `'#'`, `'A'..='D'`.

pub mod detect;
pub mod event;

pub use detect::ToneDetector;
pub use event::{DigitEvent, DtmfEventReceiver, DtmfEventSender, EventPacket, TelephoneEvent};

use thiserror::Error;

/// The 16 DTMF digits in RFC 4733 event-code order (§3.2: 0–9, then *, #, A–D).
pub const DIGITS: [char; 16] =
    ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D'];

/// The row (low-group) frequencies in Hz (ITU-T Q.23).
pub const LOW_FREQS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// The column (high-group) frequencies in Hz.
pub const HIGH_FREQS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// The keypad: `KEYPAD[row][column]`.
const KEYPAD: [[char; 4]; 4] =
    [['1', '2', '3', 'A'], ['4', '5', '6', 'B'], ['7', '8', '9', 'C'], ['*', '0', '#', 'D']];

/// Why a DTMF payload or request is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DtmfError {
    /// A telephone-event payload is shorter than its 4 bytes.
    #[error("telephone-event payload is {0} bytes, it needs 4")]
    Truncated(usize),
    /// Not one of 0-9, *, #, A-D.
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotADigit(char),
    /// A digit cannot last 0 ms, and the update interval cannot be 0.
    #[error("a DTMF duration or update interval of 0 ms is not allowed")]
    ZeroDuration,
    /// The duration does not fit the 16-bit field at this clock rate (RFC 4733 §2.5.1.3).
    #[error("a {ms} ms event does not fit in 65535 timestamp units at {clock_rate} Hz")]
    TooLong { ms: u32, clock_rate: u32 },
}

/// The RFC 4733 event code for a digit (lower-case a-d accepted).
pub fn event_code(digit: char) -> Option<u8> {
    let digit = digit.to_ascii_uppercase();
    DIGITS.iter().position(|&d| d == digit).map(|i| i as u8)
}

/// The digit for an RFC 4733 event code, `None` for non-DTMF events (flash, tones…).
pub fn digit(event_code: u8) -> Option<char> {
    DIGITS.get(usize::from(event_code)).copied()
}

/// The (low, high) tone pair of a digit in Hz.
pub fn frequencies(digit: char) -> Option<(f64, f64)> {
    let digit = digit.to_ascii_uppercase();
    KEYPAD.iter().zip(LOW_FREQS).find_map(|(row, low)| {
        row.iter().zip(HIGH_FREQS).find(|(d, _)| **d == digit).map(|(_, high)| (low, high))
    })
}

fn keypad(row: usize, column: usize) -> Option<char> {
    KEYPAD.get(row)?.get(column).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_frequencies_follow_the_standards() {
        for (i, d) in DIGITS.iter().enumerate() {
            assert_eq!(event_code(*d), Some(i as u8));
            assert_eq!(digit(i as u8), Some(*d));
        }
        assert_eq!(event_code('*'), Some(10));
        assert_eq!(event_code('#'), Some(11));
        assert_eq!(event_code('d'), Some(15));
        assert_eq!(event_code('x'), None);
        assert_eq!(digit(16), None); // flash
        assert_eq!(frequencies('1'), Some((697.0, 1209.0)));
        assert_eq!(frequencies('0'), Some((941.0, 1336.0)));
        assert_eq!(frequencies('#'), Some((941.0, 1477.0)));
        assert_eq!(frequencies('C'), Some((852.0, 1633.0)));
        assert_eq!(frequencies('?'), None);
        assert_eq!(keypad(1, 1), Some('5'));
        assert_eq!(keypad(4, 0), None);
    }
}
