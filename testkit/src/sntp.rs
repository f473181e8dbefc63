//! A tiny SNTP server on 127.0.0.1 for iguana's clock tests: it answers
//! every request with a reply built by a function of the request, so tests
//! can serve the real time, a fixed time, or hostile packets. It counts
//! the requests it saw.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// Seconds from 1900 to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

type Answer = Box<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send>;

/// A running server; stops when dropped.
pub struct SntpServer {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SntpServer {
    /// Answers with `answer(request)`; `None` leaves a request unanswered.
    /// `addr` is `127.0.0.1:0` for a free port.
    pub fn start(addr: &str, answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> anyhow::Result<SntpServer> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("bind UDP {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let port = socket.local_addr()?.port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Answer = Box::new(answer);
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((len, peer)) = socket.recv_from(&mut buf) else { continue };
                    requests.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = answer(&buf[..len]) {
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
        };
        Ok(SntpServer { port, requests, stop, thread: Some(thread) })
    }

    /// A stratum-2 server telling this host's real time.
    pub fn real_time(addr: &str) -> anyhow::Result<SntpServer> {
        Self::start(addr, |request| Some(reply(request, SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for SntpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An NTPv4 server reply (stratum 2, reference "LOCL") to `request`
/// saying it is `since_1970`: origin = the request's transmit timestamp.
pub fn reply(request: &[u8], since_1970: Duration) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x24; // LI 0, version 4, mode 4
    p[1] = 2;
    p[2] = 6;
    p[3] = 0xec; // precision 2^-20
    p[12..16].copy_from_slice(b"LOCL");
    if let Some(transmit) = request.get(40..48) {
        p[24..32].copy_from_slice(transmit);
    }
    let stamp = ntp_timestamp(since_1970);
    for at in [16, 32, 40] {
        p[at..at + 8].copy_from_slice(&stamp);
    }
    p
}

/// 64-bit NTP timestamp (era 0 or 1 folded into 32-bit seconds).
pub fn ntp_timestamp(since_1970: Duration) -> [u8; 8] {
    let secs = (since_1970.as_secs() + NTP_UNIX_OFFSET) as u32;
    let frac = ((u64::from(since_1970.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&secs.to_be_bytes());
    out[4..].copy_from_slice(&frac.to_be_bytes());
    out
}
