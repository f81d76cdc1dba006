//! rsmld
pub mod checkpoint;
pub mod item;
pub mod json;
pub mod kpl;
pub mod protocol;
pub mod split;
