//! voxide-sip: SIP signalling for Voxide.
//!
//! - [`message`]: a strict, panic-free RFC 3261 parser and printer for the headers Voxide
//!   routes on, with reply-ready errors for requests it rejects.
//! - [`auth`]: digest authentication (MD5, SHA-256) with stateless HMAC nonces.
//! - [`dialog`]: RFC 3261 §12 dialogs: sequencing, route sets, target refresh, in-dialog requests.
//! - [`registrar`]: REGISTER with digest auth, bindings with expiry, failed-auth lockout.
//! - [`framing`]: cutting a TCP byte stream into messages by Content-Length.
//! - [`transaction`]: RFC 3261 §17 client and server transactions (INVITE and non-INVITE) as
//!   sans-IO state machines driven by `now`, with the RFC 6026 Accepted state.
//! - [`ua`]: the user-agent core composing them: INVITE/CANCEL/BYE/OPTIONS handling, 2xx
//!   retransmission, call events and commands (answer, ring, reject, hang up).
//!
//! - [`shell`]: the thin tokio shell — UDP/TCP sockets, the timer, command and event channels.
//!
//! Everything but `shell` is pure: no sockets, no clock reads, no tasks; time is an argument.

pub mod auth;
pub mod dialog;
pub mod framing;
pub mod message;
pub mod registrar;
pub mod shell;
pub mod transaction;
pub mod ua;

pub use framing::{Frame, StreamFramer};
pub use message::{Message, Method, ParseError, Reaction, parse};
