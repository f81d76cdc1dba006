//! Records → items → per-worker blocks: the pipeline between the codec and the pool.
//!
//! - [`item`]: the unit of work a handler sees, and the block that carries items to a
//!   worker;
//! - [`split`]: how one record becomes items (one file per `--split` mode);
//! - [`mapper`]: a line's records into one block per worker, in parts under the in-flight
//!   budget, sequentially or on several threads by size;
//! - [`share`]: when a lease may split a line on the mapper threads that every lease of
//!   a runtime shares;
//! - [`partition`]: the one function that decides which worker an item goes to.
//!
//! Why a layer: the protocol core counts records and items and must stay free of them,
//! and the pool only runs blocks; everything that turns a record into routed work is here,
//! with the speed tricks that need it (the parallel mapper, blocks that share the line).

pub mod item;
pub mod mapper;
pub mod partition;
pub mod share;
pub mod split;
