//! Authentication of `/api/v1` requests, in the order the contract gives.
//!
//! The hot path is: checksum, SHA-256, the in-process cache of verified keys, org check,
//! scope, rate limit. A cached key costs no database read, and no request costs a database
//! write: last use and the request's audit entry go to the
//! [`Recorder`](crate::recorder::Recorder).
//!
//! - [`verify`]: rows 1 to 8, before routing ([`authenticate`]);
//! - [`policy`]: rows 10 and 11, on each route ([`Guard::guard`]);
//! - [`caller`]: the key and the [`Caller`] handlers take;
//! - [`revocation`]: how a changed key stops working on every replica.

mod caller;
mod policy;
pub mod revocation;
mod verify;

pub use caller::{rate_limit, Caller, VerifiedKey};
pub use policy::{unknown_path, Guard, Policy};
pub use revocation::{InMemoryKeyCache, KeyCache};
pub use verify::{authenticate, API_KEY_HEADER, ORG_ID_HEADER};
