//! The tag every exec handler child and its descendants carry in their environment, so that
//! the ones that left the child's process group are still found when it ends
//! ([`super::reaper::kill_tagged`]).
//!
//! The scheme lives here, below both its users: the exec handler sets it on each child it
//! starts; the reaper looks for it in `/proc/<pid>/environ`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that tags a child and its descendants.
pub const CHILD_TAG: &str = "RSMLD_EXEC_CHILD";

/// Children started by this process so far (the tag's value).
static CHILDREN_STARTED: AtomicU64 = AtomicU64::new(0);

/// A tag value no other child of any process has: `<pid>.<n>`, `n` counting this process's
/// children from 1.
pub fn next() -> String {
    format!(
        "{}.{}",
        std::process::id(),
        CHILDREN_STARTED.fetch_add(1, Ordering::Relaxed) + 1
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_are_distinct_and_name_this_process() {
        let (a, b) = (super::next(), super::next());
        assert_ne!(a, b);
        for t in [&a, &b] {
            let (pid, n) = t.split_once('.').unwrap();
            assert_eq!(pid, std::process::id().to_string());
            assert!(n.parse::<u64>().unwrap() >= 1);
        }
    }
}
