//! Test support (feature `testkit`; unstable, not part of the public API).
