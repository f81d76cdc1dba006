//! Child processes that never outlive rsmld: what the exec handler builds on.
//!
//! Three layers, each looking only down, and none looking up at the exec handler or the
//! binary (they call in; this never calls out):
//! - [`tag`]: the environment tag every exec child and its descendants inherit;
//! - [`reaper`]: rsmld as a child subreaper, reaping of orphans, killing by tag, the final
//!   sweep;
//! - [`guard`]: the exec guard, a tiny process between rsmld and each child (the hidden
//!   `__exec-guard` subcommand, answered by `app::main` through [`guard::main`]), built on
//!   the reaper.

pub mod guard;
pub mod reaper;
pub mod tag;
