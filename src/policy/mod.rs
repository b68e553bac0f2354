//! Every rule of the product, as pure functions, one file per concern. No
//! I/O here; the engine applies what these return.
//!
//! - `builds`: what a trigger sends, which build is a run's, did it build
//!   what was asked, its verdict, whether a cancel may withdraw it
//! - `trigger`: which message builds which jobs (`jobs_for`), superseding
//! - `commands`: `/ok-to-test`, `/retest`, `/test <job>`
//! - `trust`: who is trusted
//! - `report`: a run's end as a flag and a comment
//! - `timing`: polling, retries, timeouts, giving up

pub mod builds;
pub mod commands;
pub mod report;
pub mod timing;
pub mod trigger;
pub mod trust;

pub use builds::*;
pub use commands::*;
pub use report::*;
pub use timing::*;
pub use trigger::*;
pub use trust::*;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
