//! A small ext4 filesystem mounted for one test (a loop mount of an image
//! in the test's own directory) that the test can freeze (`FIFREEZE`, what
//! `fsfreeze` does, and what a snapshot or a hung disk looks like to a
//! process): every write to it blocks in the kernel until it is thawed.
//! Thawed and unmounted (lazily, so a process still holding files there
//! does not keep it busy; the loop device goes with it) when dropped, also
//! when the test panics.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` (linux/fs.h).
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

pub struct FreezableFs {
    path: PathBuf,
    frozen: bool,
}

impl FreezableFs {
    /// Makes an 8 MiB ext4 image at `image` and mounts it on `path` (an
    /// empty directory), mode 0755.
    pub fn mount(image: &Path, path: &Path) -> FreezableFs {
        let file = std::fs::File::create(image).expect("create the image");
        file.set_len(8 << 20).expect("size the image");
        drop(file);
        let mkfs = Command::new(super::tool("mkfs.ext4")).args(["-q", "-F"]).arg(image).output().expect("mkfs.ext4");
        assert!(mkfs.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&mkfs.stderr));
        let mount = Command::new(super::tool("mount"))
            .args(["-t", "ext4", "-o", "loop"])
            .arg(image)
            .arg(path)
            .output()
            .expect("mount");
        assert!(mount.status.success(), "mount -o loop: {}", String::from_utf8_lossy(&mount.stderr));
        let fs = FreezableFs { path: path.to_path_buf(), frozen: false };
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        fs
    }

    fn ioctl(&self, request: libc::c_ulong) -> std::io::Result<()> {
        let dir = std::fs::File::open(&self.path)?;
        // SAFETY: FIFREEZE/FITHAW on a descriptor of the mount point; the
        // argument is unused.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), request as _, 0) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// Every write to the filesystem blocks from now on.
    pub fn freeze(&mut self) {
        self.ioctl(FIFREEZE).expect("FIFREEZE");
        self.frozen = true;
    }

    pub fn thaw(&mut self) {
        if self.frozen {
            self.ioctl(FITHAW).expect("FITHAW");
            self.frozen = false;
        }
    }
}

impl Drop for FreezableFs {
    fn drop(&mut self) {
        if self.frozen {
            let _ = self.ioctl(FITHAW);
        }
        if let Ok(path) = CString::new(self.path.as_os_str().as_bytes()) {
            // SAFETY: unmounts what `mount` mounted; MNT_DETACH never blocks.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
