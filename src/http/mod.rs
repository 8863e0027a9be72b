//! The pieces every route shares below authentication: case-insensitive paths, credentials
//! in URLs, query parameters, field validation, JSON bodies and ids. Nothing here knows who
//! the caller is; [`crate::context`] and [`crate::auth`] build on it.

mod body;
mod fields;
mod ids;
mod params;
mod path;
mod redact;

pub use body::*;
pub use fields::*;
pub use ids::*;
pub use params::*;
pub use path::*;
pub use redact::*;
