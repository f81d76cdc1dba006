//! rsmld
pub mod checkpoint;
pub mod config;
pub mod driver;
pub mod handler;
pub mod item;
pub mod json;
pub mod kpl;
pub mod pool;
pub mod protocol;
pub mod split;
pub mod sys;
