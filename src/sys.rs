//! The raw system calls nix and rustix do not wrap, in one place.
//!
//! This is the only module allowed `unsafe`; each block says why it holds.
//! Errors name the call and its arguments, as u-root's kexec does.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::libc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open {path}")]
    Open { path: String, #[source] source: std::io::Error },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("SYS_kexec_file_load({kernel_fd}, {initrd_fd}, {cmdline_len}, {cmdline:?}, {flags:#x})")]
    KexecFileLoad {
        kernel_fd: i32,
        initrd_fd: i32,
        cmdline_len: usize,
        cmdline: String,
        flags: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("ioctl({device}, {request}): {source}")]
    Loop {
        device: String,
        request: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("fcntl({fd}, F_GETFD): not an inherited descriptor")]
    InheritedFd {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
}

fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|source| Error::Open { path: path.display().to_string(), source })
}

/// Loads `kernel` (and `initrd`) to be started by `reboot(RB_KEXEC)`.
/// The kernel checks the image's signature when the kernel demands it.
pub fn kexec_file_load(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<(), Error> {
    let kernel_file = open(kernel)?;
    let initrd_file = initrd.map(open).transpose()?;
    let text = CString::new(cmdline).map_err(|_| Error::CmdlineNul)?;
    // The length the kernel wants counts the terminating NUL.
    let cmdline_len = text.as_bytes_with_nul().len();
    let (initrd_fd, flags) = match &initrd_file {
        Some(f) => (f.as_raw_fd(), 0),
        None => (-1, libc::KEXEC_FILE_NO_INITRAMFS as u32),
    };
    let kernel_fd = kernel_file.as_raw_fd();
    // SAFETY: both fds are open for the duration of the call (the Files live
    // until the end of this function); `text` is a valid NUL-terminated
    // buffer of exactly `cmdline_len` bytes that outlives the call; the
    // kernel only reads these arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel_fd,
            initrd_fd,
            cmdline_len as libc::c_ulong,
            text.as_ptr(),
            libc::c_ulong::from(flags),
        )
    };
    if ret != 0 {
        return Err(Error::KexecFileLoad {
            kernel_fd,
            initrd_fd,
            cmdline_len,
            cmdline: cmdline.to_string(),
            flags,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Takes ownership of descriptor `fd`, left open across `exec` by the
/// parent that started this process and named on its command line (the
/// uevent socket PID 1 hands to `iguana hotplug`). Call once per `fd`.
pub fn adopt_inherited_fd(fd: RawFd) -> Result<OwnedFd, Error> {
    // stdin, stdout and stderr are never the descriptor handed over.
    if fd < 3 {
        return Err(Error::InheritedFd { fd, source: std::io::Error::from_raw_os_error(libc::EBADF) });
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; for a number that
    // is not open it fails with EBADF and touches nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::InheritedFd { fd, source: std::io::Error::last_os_error() });
    }
    // SAFETY: `fd` is open (checked above) and was passed to this process
    // by its parent for exactly this use; the caller adopts it once, at
    // startup, so no other owner in this process closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives the calling process the signal state of a freshly started program:
/// every disposition SIG_DFL and nothing blocked. Ignored signals and the
/// mask survive exec, and PID 1 ignores SIGPIPE (the Rust runtime does), so
/// a container started without this would inherit that. Called in the
/// container's init right before exec; failures (SIGKILL and SIGSTOP
/// cannot be changed, libc keeps some real-time signals) are of no concern.
pub fn reset_signals() {
    // Linux numbers signals 1..=64 (_NSIG - 1) on every architecture we build for.
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: an all-zero `sigaction` is a valid value of the C struct
        // (no handler pointer is ever called: sa_sigaction is SIG_DFL, and
        // sa_flags has no SA_SIGINFO); the pointer passed is to a live local
        // and the old action is not asked for (null).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// getrandom 0.3's custom backend, selected for the static build by
/// `--cfg getrandom_backend="custom"` (.cargo/config.toml): `rand`'s thread
/// RNG is seeded by `entropy::fill`, which never waits for the crng.
/// Elsewhere (host builds) getrandom uses its own backend and this symbol
/// is simply never called.
///
/// # Safety
/// getrandom calls it with `dest` valid for writes of `len` bytes (its
/// `fill_inner` passes a `&mut [MaybeUninit<u8>]`'s pointer and length).
#[no_mangle]
pub unsafe extern "Rust" fn __getrandom_v03_custom(dest: *mut u8, len: usize) -> Result<(), getrandom::Error> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract above: `dest` is valid for `len` bytes
    // and exclusively ours for this call. Writing bytes into possibly
    // uninitialized memory through `&mut [u8]` is sound for `u8` once
    // zeroed first, which `write_bytes` does.
    let buf = unsafe {
        std::ptr::write_bytes(dest, 0, len);
        std::slice::from_raw_parts_mut(dest, len)
    };
    crate::entropy::fill(buf).map_err(|e| {
        e.raw_os_error().and_then(|n| u16::try_from(n).ok()).map_or(getrandom::Error::UNEXPECTED, getrandom::Error::new_custom)
    })
}

// <linux/loop.h>; the libc crate does not carry them.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (LOOP_CONFIGURE, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A free loop device bound read-only to `file` (autoclear: it goes away
/// with its last user). Returns the device path, `/dev/loopN`, and the
/// open device: the caller keeps it open until the mount holds the device,
/// or autoclear would detach it at once.
pub fn loop_attach(file: &File) -> Result<(std::path::PathBuf, File), Error> {
    let control = open(Path::new("/dev/loop-control"))?;
    // A device found free can be taken by someone else before it is
    // configured (EBUSY); ask again a few times.
    let mut last = None;
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number;
        // the fd is open for the duration of the call.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if number < 0 {
            let source = std::io::Error::last_os_error();
            return Err(Error::Loop { device: "/dev/loop-control".into(), request: "LOOP_CTL_GET_FREE", source });
        }
        let device = format!("/dev/loop{number}");
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .open(&device)
            .map_err(|source| Error::Open { path: device.clone(), source })?;
        // SAFETY: an all-zero loop_config is the C default (no offset, no
        // size limit, no encryption); every field is plain data.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = file.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        // SAFETY: `config` is a live, properly laid out `struct loop_config`
        // the kernel only reads; both fds are open during the call.
        let ret = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &config as *const LoopConfig) };
        if ret == 0 {
            return Ok((device.into(), dev));
        }
        let source = std::io::Error::last_os_error();
        if source.raw_os_error() != Some(libc::EBUSY) {
            return Err(Error::Loop { device, request: "LOOP_CONFIGURE", source });
        }
        last = Some(Error::Loop { device, request: "LOOP_CONFIGURE", source });
    }
    Err(last.unwrap_or(Error::Loop {
        device: "/dev/loop-control".into(),
        request: "LOOP_CTL_GET_FREE",
        source: std::io::Error::from_raw_os_error(libc::EBUSY),
    }))
}
