//! Randomness that never waits for the kernel's entropy pool, for the
//! things that need unpredictability but not secrecy: DHCP transaction ids
//! and delays (mozim), retry jitter, SNTP nonces, all drawn from `rand`'s
//! thread RNG.
//!
//! `rand` seeds that RNG through the `getrandom` crate (0.3), whose Linux
//! backend calls a blocking `getrandom(2)`. Under TCG without a hardware
//! RNG the kernel's crng takes seconds to initialize, and DHCP sat on it.
//! The static build selects getrandom's custom backend
//! (`.cargo/config.toml`: `--cfg getrandom_backend="custom"` for the musl
//! target), which lands here through `sys.rs`. TLS is not affected: ring
//! and rustls draw their keys through their own `getrandom` (0.2), which
//! still blocks until the pool is ready, as key material must.

use std::io;

use rustix::io::Errno;
use rustix::rand::{getrandom, GetRandomFlags};

/// Fills `buf`: `GRND_INSECURE` (Linux ≥ 5.6) never blocks; on an older
/// kernel `GRND_NONBLOCK` answers once the pool is ready, and until then
/// the plain, blocking call is the only honest source left.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    let mut flags = GetRandomFlags::INSECURE;
    while done < buf.len() {
        match getrandom(&mut buf[done..], flags) {
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(Errno::INVAL) if flags == GetRandomFlags::INSECURE => flags = GetRandomFlags::NONBLOCK,
            Err(Errno::AGAIN) if flags == GetRandomFlags::NONBLOCK => flags = GetRandomFlags::empty(),
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_length_with_distinct_bytes() {
        // (length): a buffer of zeros, filled, must not stay all zeros,
        // and two fills differ (1 in 2^64 they would not for 8 bytes).
        for len in [8usize, 16, 33, 256, 4096] {
            let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
            fill(&mut a).unwrap();
            fill(&mut b).unwrap();
            assert!(a.iter().any(|&x| x != 0), "{len}");
            assert_ne!(a, b, "{len}");
        }
        fill(&mut []).unwrap();
    }
}
