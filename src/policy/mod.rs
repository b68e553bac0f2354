//! Every rule of the product, as pure functions, one file per concern. No
//! I/O here; the engine applies what these return.
//!
//! - `trigger`: which message builds which jobs (`jobs_for`), superseding
//! - `commands`: `/ok-to-test`, `/retest`, `/test <job>`
//! - `trust`: who is trusted
//! - `builds`: which Jenkins build is a run's; what a trigger sends
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
