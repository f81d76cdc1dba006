//! Durable files at a path: the one implementation of "on disk where a reader will look",
//! shared by the file handler's archive ([`mod@super::file`]) and the dead-letter sink
//! ([`crate::pool::dead_letter`]).
//!
//! Both count an item as done once its line is written here, so both must keep the same
//! promise: after [`DurableFile::sync`] and [`DurableDir::verify`] return `Ok`, the bytes
//! survive a crash of the process and of the machine *and* they are in the file the
//! configured path names. The rules:
//!
//! - **The directory is held open.** [`DurableDir`] keeps an fd of the directory; files
//!   are created in it (`openat`, `O_CREAT|O_EXCL|O_APPEND`, so a name is never reused
//!   and an existing file — perhaps with a torn tail from a crash — is never appended
//!   to) and the directory `fsync`ed after each creation is that fd, so the entry made
//!   durable is the one created, whatever happens to the path meanwhile. A directory that
//!   had to be created at start-up has each created parent synced too.
//! - **At the path.** After each sync the file at the file's path must still be the one
//!   written (device and inode) and the directory at the path still the one held.
//!   Otherwise the caller fails its batch with the message, which names what happened.
//! - **The same file system.** Before a new file, a directory that was replaced by
//!   another on the *same* file system (removed and created again, a symlink swapped) is
//!   taken over with a warning; one on another file system or another mount (the held one
//!   was unmounted, or something was mounted over the path) never is: the held directory
//!   may come back (a remount) and hide every file written meanwhile under the mount.
//! - **Nobody else's bytes.** A file truncated by someone else (logrotate's
//!   `copytruncate`, `: > file`) keeps its inode, so the checks above cannot see it; with
//!   a stale offset the next write would leave NUL bytes glued to a line. So before each
//!   write the size must be exactly what this process wrote ([`DurableFile::check_intact`]:
//!   otherwise the caller starts a new file, with a warning), writes are `O_APPEND`, and
//!   after each `fdatasync` the size must be at least that ([`DurableFile::sync`]:
//!   otherwise a truncation raced the batch and it fails).
//! - **Whole lines.** After a failed write or sync the file is cut back to its last synced
//!   length (best effort, and only if no one else made it shorter) and never written
//!   again ([`DurableFile::abandon`]): after a failed `fsync`, Linux may drop the dirty
//!   pages and report success on the next call.

use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A file system object's identity: device and inode number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// Creates `dir` and any missing parents, then syncs the parent of each directory it
/// created, so that the new entries survive a crash.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        sync_dir(parent_of(d))?;
    }
    Ok(())
}

/// Makes the directory's entries (names of files created in it) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The parent directory of `p` ("." for a bare name).
fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes the entry of directory `dir` durable in its parent: the parent of the path as
/// given (where `dir`'s name, or the symlink it is, lives) and, if `dir` resolves
/// elsewhere, the parent of its real path.
fn sync_parents(dir: &Path) -> io::Result<()> {
    let given = parent_of(dir);
    sync_dir(given)?;
    let real = fs::canonicalize(dir)?;
    let real_parent = parent_of(&real);
    if fs::canonicalize(given)? != real_parent {
        sync_dir(real_parent)?;
    }
    Ok(())
}

/// The mount id of `name` relative to `fd` (`statx` with `STATX_MNT_ID`); `None` where
/// the kernel or the C library cannot tell.
fn mount_id(fd: libc::c_int, name: &CStr, flags: libc::c_int) -> Option<u64> {
    #[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
    {
        // SAFETY: statx is a plain syscall wrapper; the struct is plain old data it fills.
        let mut buf: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated name and a buffer of the right type.
        let rc = unsafe { libc::statx(fd, name.as_ptr(), flags, libc::STATX_MNT_ID, &mut buf) };
        (rc == 0 && buf.stx_mask & libc::STATX_MNT_ID != 0).then_some(buf.stx_mnt_id)
    }
    #[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
    {
        let _ = (fd, name, flags);
        None
    }
}

/// The mount id of the object at `path` (following symlinks).
fn mount_id_of_path(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    mount_id(libc::AT_FDCWD, &c, 0)
}

/// A directory held open, with what identifies it.
struct Held {
    file: File,
    id: FileId,
    mount: Option<u64>,
}

impl Held {
    fn open(path: &Path) -> io::Result<Held> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)?;
        let id = FileId::of(&file.metadata()?);
        let mount = mount_id(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH);
        Ok(Held { file, id, mount })
    }

    /// Whether `other` is on the same file system and mount as this one.
    fn same_mount(&self, dev: u64, mount: Option<u64>) -> bool {
        dev == self.id.dev
            && match (self.mount, mount) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// A directory that durable files are created in, held open (see the module docs).
pub(crate) struct DurableDir {
    /// The path as configured.
    path: PathBuf,
    /// How messages name it ("output directory", "dead-letter directory").
    what: &'static str,
    held: Held,
}

impl DurableDir {
    /// Creates `path` (and its parents, durably) if missing, and holds it open. The error
    /// names the directory.
    pub(crate) fn open(path: &Path, what: &'static str) -> Result<DurableDir, String> {
        create_dir_durably(path)
            .map_err(|e| format!("cannot create {what} {}: {e}", path.display()))?;
        let held =
            Held::open(path).map_err(|e| format!("cannot open {what} {}: {e}", path.display()))?;
        Ok(DurableDir {
            path: path.to_path_buf(),
            what,
            held,
        })
    }

    /// The path as configured.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Before a new file: makes sure it goes into the directory now at the path. If the
    /// held one was replaced by another directory on the same file system and mount, that
    /// one is opened and its own entry synced, with a warning (logged as `who`). A path
    /// without a directory, or with one on another file system, fails: rsmld creates the
    /// directory at start-up only, and never follows a mount change.
    pub(crate) fn ensure(&mut self, who: &str) -> Result<(), String> {
        let Some(problem) = self.problem() else {
            return Ok(());
        };
        if !fs::metadata(&self.path).is_ok_and(|m| m.is_dir()) {
            return Err(format!(
                "{problem}; rsmld creates the {} only at start-up",
                self.what
            ));
        }
        let held =
            Held::open(&self.path).map_err(|e| format!("{problem}; opening the new one: {e}"))?;
        if !self.held.same_mount(held.id.dev, held.mount) {
            return Err(self.other_fs());
        }
        sync_parents(&self.path)
            .map_err(|e| format!("{problem}; syncing the parent of the new one: {e}"))?;
        log::warn!(
            "{who}: {problem}; new files go into the directory now at {}",
            self.path.display()
        );
        self.held = held;
        Ok(())
    }

    fn other_fs(&self) -> String {
        format!(
            "{} {} is now on another file system (unmounted?); rsmld never follows it there",
            self.what,
            self.path.display()
        )
    }

    /// `None` while the directory at the path is the one held; otherwise what happened
    /// to it. One `stat` when all is well.
    pub(crate) fn problem(&self) -> Option<String> {
        let (what, d) = (self.what, self.path.display());
        let at_path = match fs::metadata(&self.path) {
            Ok(m) if FileId::of(&m) == self.held.id => return None,
            other => other,
        };
        // A directory that was removed has no links left.
        let held_removed = self.held.file.metadata().is_ok_and(|m| m.nlink() == 0);
        Some(match at_path {
            Ok(m) if !m.is_dir() => format!("{what} {d} was replaced by a non-directory"),
            Ok(m) if !self.held.same_mount(m.dev(), mount_id_of_path(&self.path)) => {
                self.other_fs()
            }
            Ok(_) if held_removed => {
                format!("{what} {d} was replaced (the one rsmld was writing to was removed)")
            }
            Ok(_) => format!(
                "{what} {d} was replaced by another directory (it was moved away, \
                 or a symlink on the path points elsewhere now)"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound && held_removed => {
                format!("{what} {d} was removed")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                format!("{what} {d} was renamed away")
            }
            Err(e) => format!("{what} {d} cannot be checked: {e}"),
        })
    }

    /// Creates the file `name` in the held directory (`O_CREAT|O_EXCL|O_APPEND`), syncs
    /// the directory and checks that it is still the one at the path. `Ok(None)`: the
    /// name exists already (the caller picks another).
    pub(crate) fn create(&self, name: &str) -> Result<Option<DurableFile>, String> {
        let path = self.path.join(name);
        let file = match self.create_new(name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => {
                let why = self.problem().unwrap_or_else(|| e.to_string());
                return Err(format!("cannot create {}: {why}", path.display()));
            }
        };
        if let Err(e) = self.held.file.sync_all() {
            // Not durable: do not use it (an empty leftover is harmless).
            self.remove(name);
            return Err(format!(
                "syncing {} {} after creating {}: {e}",
                self.what,
                self.path.display(),
                path.display()
            ));
        }
        if let Some(problem) = self.problem() {
            return Err(format!("{problem} while rsmld created {}", path.display()));
        }
        let id = file
            .metadata()
            .map(|m| FileId::of(&m))
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        Ok(Some(DurableFile {
            file,
            id,
            path,
            len: 0,
            synced: 0,
            opened: Instant::now(),
        }))
    }

    fn create_new(&self, name: &str) -> io::Result<File> {
        let c_name = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        let flags =
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
        // SAFETY: openat on a directory fd we own and a NUL-terminated name; the mode is
        // the variadic third argument, as open(2) documents for O_CREAT.
        let fd = unsafe {
            libc::openat(
                self.held.file.as_raw_fd(),
                c_name.as_ptr(),
                flags,
                0o666 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Removes the file `name` from the held directory (best effort).
    fn remove(&self, name: &str) {
        if let Ok(c_name) = CString::new(name) {
            // SAFETY: unlinkat on a directory fd we own and a NUL-terminated name.
            unsafe {
                libc::unlinkat(self.held.file.as_raw_fd(), c_name.as_ptr(), 0);
            }
        }
    }

    /// After a sync: checks that `f` is still the file at its path, in the directory
    /// held — so its bytes are where a reader of the path will look. Two `stat`s when all
    /// is well.
    pub(crate) fn verify(&self, f: &DurableFile) -> Result<(), String> {
        let at_path = fs::metadata(&f.path);
        let file_ok = at_path.as_ref().is_ok_and(|m| FileId::of(m) == f.id);
        let dir_problem = self.problem();
        if file_ok && dir_problem.is_none() {
            return Ok(());
        }
        let path = f.path.display();
        if let Some(problem) = dir_problem {
            return Err(format!("{problem} while rsmld was writing {path}"));
        }
        let what = self.file_kind();
        let unlinked = f.file.metadata().is_ok_and(|m| m.nlink() == 0);
        Err(match at_path {
            // Not `file_ok`: the path names another file.
            Ok(_) => format!("{what} {path} was replaced by another file"),
            Err(_) if unlinked => format!("{what} {path} was unlinked"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                format!("{what} {path} was renamed away")
            }
            Err(e) => format!("{what} {path} cannot be checked: {e}"),
        })
    }

    /// "output file" for an "output directory", and so on.
    fn file_kind(&self) -> String {
        let base = self.what.strip_suffix(" directory").unwrap_or(self.what);
        format!("{base} file")
    }
}

/// A file created by [`DurableDir::create`], appended to and synced.
pub(crate) struct DurableFile {
    file: File,
    /// Its device and inode, to find it at `path` again.
    id: FileId,
    path: PathBuf,
    /// Bytes written.
    len: u64,
    /// Bytes known to be on disk.
    synced: u64,
    opened: Instant,
}

impl DurableFile {
    /// The path it was created at.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// When it was created.
    pub(crate) fn opened(&self) -> Instant {
        self.opened
    }

    /// Before a write: the file must hold exactly the bytes this process wrote. Someone
    /// who truncated it (or wrote to it) keeps its inode, so only the size can tell; the
    /// caller then leaves the file to them and starts a new one.
    pub(crate) fn check_intact(&self) -> Result<(), String> {
        let size = self
            .file
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", self.path.display()))?
            .len();
        size_is(size, self.len, &self.path)
    }

    /// Appends `bytes` with `write(2)` (no user-space buffer). On an error the file must
    /// be [abandoned](DurableFile::abandon); the message names the file.
    pub(crate) fn write(&mut self, bytes: &[u8], limit_hint: &str) -> Result<(), String> {
        self.file.write_all(bytes).map_err(|e| {
            format!(
                "writing {}: {}",
                self.path.display(),
                describe_write_error(&e, limit_hint)
            )
        })?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes everything written durable (`fdatasync`), then checks that the file still
    /// holds it: a truncation by someone else between the write and the sync leaves a
    /// shorter file whose data is gone. On an error the file must be abandoned. `true`
    /// if there was anything to sync.
    pub(crate) fn sync(&mut self) -> Result<bool, String> {
        if self.synced == self.len {
            return Ok(false);
        }
        self.file
            .sync_data()
            .map_err(|e| format!("syncing {}: {e}", self.path.display()))?;
        let size = self
            .file
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", self.path.display()))?
            .len();
        size_at_least(size, self.len, &self.path)?;
        self.synced = self.len;
        Ok(true)
    }

    /// After an error: cuts the file back to what is known durable (unless someone else
    /// made it shorter: extending it would write NUL bytes) and drops it.
    pub(crate) fn abandon(self, who: &str) {
        let size = self.file.metadata().map(|m| m.len());
        if size.is_ok_and(|s| s > self.synced) {
            if let Err(e) = self.file.set_len(self.synced) {
                log::warn!(
                    "{who}: cannot truncate {} after an error: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// The check before a write: the file is exactly as long as what was written to it.
fn size_is(size: u64, expected: u64, path: &Path) -> Result<(), String> {
    if size == expected {
        return Ok(());
    }
    let how = if size < expected {
        "truncated"
    } else {
        "written to"
    };
    Err(format!(
        "file {} was {how} by someone else: {size} bytes, rsmld wrote {expected} \
         (logrotate copytruncate?)",
        path.display()
    ))
}

/// The check after a sync: nothing of what was written was cut off.
fn size_at_least(size: u64, expected: u64, path: &Path) -> Result<(), String> {
    if size >= expected {
        return Ok(());
    }
    Err(format!(
        "file {} was truncated by someone else while rsmld was writing it \
         ({size} bytes after the sync, rsmld wrote {expected}; logrotate copytruncate?): \
         the batch is not in it",
        path.display()
    ))
}

/// The text of a failed write; for EFBIG, which limit was hit and `limit_hint` (what to
/// set below it, e.g. "set --rotate-bytes below it").
pub(crate) fn describe_write_error(e: &io::Error, limit_hint: &str) -> String {
    if e.raw_os_error() != Some(libc::EFBIG) {
        return e.to_string();
    }
    let mut limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) };
    if rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
        format!(
            "{e}: the file size limit (RLIMIT_FSIZE, `ulimit -f`) is {} bytes; {limit_hint}",
            limit.rlim_cur
        )
    } else {
        format!("{e}: the file system's largest file size; {limit_hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_file() -> (tempfile::TempDir, DurableDir, DurableFile) {
        let root = tempfile::tempdir().unwrap();
        let dir = DurableDir::open(&root.path().join("out"), "output directory").unwrap();
        let f = dir.create("a.jsonl").unwrap().unwrap();
        (root, dir, f)
    }

    /// A truncation between the write and the sync: the sync fails, and abandoning the
    /// file does not extend it again with NUL bytes.
    #[test]
    fn a_truncation_between_write_and_sync_fails_the_sync() {
        let (_root, dir, mut f) = dir_with_file();
        f.write(b"one\n", "").unwrap();
        assert!(f.sync().unwrap());
        dir.verify(&f).unwrap();
        f.write(b"two\n", "").unwrap();
        OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap()
            .set_len(0)
            .unwrap();
        let e = f.sync().unwrap_err();
        assert!(
            e.contains("was truncated by someone else") && e.contains("0 bytes"),
            "{e}"
        );
        let path = f.path().to_path_buf();
        f.abandon("test");
        assert_eq!(fs::read(path).unwrap(), b"");
    }

    /// A truncation between two batches: the check before the next write sees it (and a
    /// file someone appended to as well); an untouched file passes.
    #[test]
    fn the_check_before_a_write_sees_a_truncation_or_foreign_bytes() {
        let (_root, _dir, mut f) = dir_with_file();
        f.write(b"one\n", "").unwrap();
        f.sync().unwrap();
        f.check_intact().unwrap();
        fs::write(f.path(), b"").unwrap();
        let e = f.check_intact().unwrap_err();
        assert!(e.contains("was truncated by someone else"), "{e}");
        fs::write(f.path(), b"someone else's lines\n").unwrap();
        let e = f.check_intact().unwrap_err();
        assert!(e.contains("was written to by someone else"), "{e}");
        assert_eq!(size_at_least(5, 4, Path::new("x")), Ok(()));
        assert!(size_at_least(3, 4, Path::new("x")).is_err());
    }

    /// An existing name is never opened: `create` reports it taken.
    #[test]
    fn create_never_reuses_a_name() {
        let (_root, dir, _f) = dir_with_file();
        assert!(dir.create("a.jsonl").unwrap().is_none());
    }
}
