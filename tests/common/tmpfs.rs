//! A small tmpfs mounted for one test, to inject real write faults: fill it
//! up (ENOSPC) or remount it read-only (EROFS). Unmounted when dropped, also
//! when the test panics (lazily, so processes still holding files on it do
//! not keep it busy).
//!
//! The mount is a real one, visible to the whole machine (the daemon under
//! test is a separate process and must see it), on a directory the test
//! created under its own temp dir.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct Tmpfs {
    path: PathBuf,
    c_path: CString,
}

fn c_string(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `256k`) with mode
    /// 0755 on `path`, creating the directory first.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        let (fstype, data) = (c_string("tmpfs"), c_string(&format!("size={size},mode=0755")));
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe { libc::mount(fstype.as_ptr(), c_path.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
        assert_eq!(rc, 0, "mount tmpfs on {}: {}", path.display(), std::io::Error::last_os_error());
        Tmpfs { path: path.to_path_buf(), c_path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn remount(&self, flags: libc::c_ulong) {
        // SAFETY: mount(2) remounting our own mount point; no data.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                self.c_path.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | flags,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "remount {}: {}", self.path.display(), std::io::Error::last_os_error());
    }

    /// `mount -o remount,ro`: every write on it now fails with EROFS.
    pub fn read_only(&self) {
        self.remount(libc::MS_RDONLY);
    }

    /// `mount -o remount,rw`.
    pub fn read_write(&self) {
        self.remount(0);
    }

    /// Fills the filesystem with one file until ENOSPC; returns the file
    /// (remove it to give the space back).
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join(".filler");
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let chunk = vec![0x5a_u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: unmounts what `mount` mounted; MNT_DETACH never blocks on
        // files still open there.
        unsafe { libc::umount2(self.c_path.as_ptr(), libc::MNT_DETACH) };
    }
}
