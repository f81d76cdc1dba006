//! rsmld
pub mod kpl;
