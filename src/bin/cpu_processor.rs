//! Benchmark processor for scaling: rsmld with a compiled-in handler that does a fixed
//! amount of CPU-bound work per item — `RSMLD_CPU_ROUNDS` (default 20) rounds of MD5
//! over the item's decoded payload, each round chained on the previous digest. Run it like
//! `rsmld` without `--handler`, e.g. `cpu_processor --workers 2`; compare `--workers 1`
//! with `--workers N` under `mld_sim` to see how the pool scales.

use std::sync::Arc;

use md5::{Digest, Md5};
use rsmld::{
    BatchError, Handler, HandlerDescriptor, HandlerError, HandlerFactory, Item, LeaseId, Program,
    WorkerContext,
};

const DEFAULT_ROUNDS: u32 = 20;

struct Burn {
    rounds: u32,
    sink: u8,
}

impl Handler for Burn {
    fn process(&mut self, _lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        for item in items {
            let bytes = item
                .data
                .bytes()
                .map_err(|e| HandlerError::new(format!("bad base64: {e}")))?;
            let mut digest = [0u8; 16];
            for _ in 0..self.rounds {
                let mut h = Md5::new();
                h.update(digest);
                h.update(&bytes);
                digest = h.finalize().into();
            }
            self.sink ^= digest[0];
        }
        std::hint::black_box(self.sink);
        Ok(())
    }
}

struct Factory {
    rounds: u32,
}

impl HandlerFactory for Factory {
    fn create(&self, _ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Burn {
            rounds: self.rounds,
            sink: 0,
        }))
    }
}

fn main() -> std::process::ExitCode {
    let rounds = match std::env::var("RSMLD_CPU_ROUNDS") {
        Ok(v) => match v.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("cpu_processor: RSMLD_CPU_ROUNDS={v:?} is not a number");
                return std::process::ExitCode::from(2);
            }
        },
        Err(_) => DEFAULT_ROUNDS,
    };
    let burn = HandlerDescriptor::fixed(
        "cpu",
        "RSMLD_CPU_ROUNDS rounds of MD5 per item",
        Arc::new(Factory { rounds }),
    );
    rsmld::run(Program::new("cpu_processor", env!("CARGO_PKG_VERSION")).default_handler(burn))
}
