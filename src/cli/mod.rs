//! The command line: flags and `rsmld.*` properties become a validated configuration, and
//! `rsmld check` validates the daemon's properties file with the same code.
//!
//! Layers inside, each looking only down: [`units`], [`properties`] and [`kcl`] are leaves
//! (human units, the Java properties format, the daemon's table of keys); [`config`] is the
//! clap definition and its translation into the runtime's configuration; [`check`] runs
//! [`config`]'s parsers over a properties file. [`kcl`] sits below both `config` (the
//! `--kcl` flag) and `check` (the key table), so neither imports the other's tables.

pub mod attach;
pub mod check;
pub mod config;
pub mod error;
pub mod kcl;
pub mod program;
pub mod properties;
pub mod registry;
pub mod units;
