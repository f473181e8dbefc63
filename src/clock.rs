//! Phase "clock": a sane wall clock before the first TLS connection.
//!
//! Machines boot with dead RTC batteries or RTCs set to local time; TLS then
//! fails with "certificate not valid yet". Any time before iguana's build
//! date (`IGUANA_BUILD_EPOCH`, see build.rs) is certainly wrong, so PID 1
//! then asks an NTP server (`rd.iguana.ntp=`, else DHCP option 42) for the
//! time and sets it. The exchange is a minimal SNTP client (RFC 4330): one
//! 48-byte request, one reply, validated before it is believed. It runs in
//! a helper child (`iguana sntp --set SERVER...`) because the reply is
//! untrusted network input.
//!
//! `request`, `parse_reply`, `parse_server`, `civil` and `wrong_clock_hint`
//! are pure; the socket and `clock_settime` are in `query` and `set_clock`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Written by `iguana sntp --set` once the clock was set from a server, so
/// a later TLS error can tell a verified clock from an unverified one.
pub const SYNCED_MARK: &str = "/run/iguana/clock-synced";
pub const NTP_PORT: u16 = 123;
pub const PACKET_LEN: usize = 48;
/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
const TRIES: u32 = 3;

/// iguana's build date in seconds since 1970 (embedded by build.rs).
pub fn build_epoch() -> u64 {
    env!("IGUANA_BUILD_EPOCH").parse().unwrap_or(0)
}

/// Why a server's answer was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReply {
    #[error("{0} bytes, an NTP reply has at least 48")]
    Short(usize),
    #[error("mode {0}, not a server reply (4)")]
    Mode(u8),
    #[error("version {0} is not NTP 1..4")]
    Version(u8),
    #[error("origin timestamp does not echo our request")]
    Origin,
    #[error("kiss-of-death {0:?}")]
    KissOfDeath(String),
    #[error("stratum {0} is not 1..15")]
    Stratum(u8),
    #[error("server clock is not synchronized (leap indicator 3)")]
    Unsynchronized,
    #[error("transmit timestamp is zero")]
    ZeroTransmit,
    #[error("transmit timestamp is before 1970")]
    Before1970,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("resolve NTP server {server}")]
    Resolve { server: String, #[source] source: std::io::Error },
    #[error("NTP server {server} has no address")]
    NoAddress { server: String },
    #[error("UDP socket for NTP server {server}")]
    Socket { server: String, #[source] source: std::io::Error },
    #[error("send to NTP server {server}")]
    Send { server: String, #[source] source: std::io::Error },
    #[error("NTP server {server} refused: nothing listens on its port")]
    Refused { server: String },
    #[error("NTP server {server} did not answer ({tries} tries, {secs}s each)")]
    NoReply { server: String, tries: u32, secs: u64 },
    #[error("NTP server {server} sent a bad reply")]
    Reply { server: String, #[source] source: BadReply },
    #[error("clock_settime(CLOCK_REALTIME, {time})")]
    SetClock { time: String, #[source] source: nix::Error },
}

/// `host`, `host:port`, `IPv4:port`, `IPv6` or `[IPv6]:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses one `rd.iguana.ntp=` item; `None` when it is not a host[:port].
pub fn parse_server(item: &str) -> Option<Server> {
    let (host, port) = if let Some(rest) = item.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => NTP_PORT,
            _ => after.strip_prefix(':')?.parse().ok()?,
        };
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else if item.parse::<std::net::Ipv6Addr>().is_ok() {
        (item, NTP_PORT)
    } else {
        match item.split_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (item, NTP_PORT),
        }
    };
    let hostname = |h: &str| {
        h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
            })
    };
    if port == 0 || !(host.contains(':') || hostname(host)) {
        return None;
    }
    Some(Server { host: host.to_string(), port })
}

/// A client request (LI 0, version 4, mode 3) whose transmit timestamp is
/// `nonce`: RFC 4330 lets the client put anything there, and a random value
/// that the server must echo as origin is what ties the reply to us.
pub fn request(nonce: [u8; 8]) -> [u8; PACKET_LEN] {
    let mut packet = [0u8; PACKET_LEN];
    packet[0] = 0b00_100_011;
    packet[40..48].copy_from_slice(&nonce);
    packet
}

/// What a believable reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub stratum: u8,
    /// The server's transmit timestamp, as time since 1970.
    pub transmit: Duration,
}

/// Checks a reply to `request(nonce)` (RFC 4330 section 5) and reads it.
pub fn parse_reply(packet: &[u8], nonce: [u8; 8]) -> Result<Reply, BadReply> {
    let header: &[u8; PACKET_LEN] = packet
        .get(..PACKET_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(BadReply::Short(packet.len()))?;
    let (leap, version, mode) = (header[0] >> 6, (header[0] >> 3) & 7, header[0] & 7);
    if mode != 4 {
        return Err(BadReply::Mode(mode));
    }
    if !(1..=4).contains(&version) {
        return Err(BadReply::Version(version));
    }
    if header[24..32] != nonce {
        return Err(BadReply::Origin);
    }
    let stratum = header[1];
    if stratum == 0 {
        let code: String = header[12..16].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect();
        return Err(BadReply::KissOfDeath(code));
    }
    if stratum > 15 {
        return Err(BadReply::Stratum(stratum));
    }
    if leap == 3 {
        return Err(BadReply::Unsynchronized);
    }
    let word = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let (secs, frac) = (word(40), word(44));
    if secs == 0 && frac == 0 {
        return Err(BadReply::ZeroTransmit);
    }
    let transmit = ntp_to_unix(secs, frac).ok_or(BadReply::Before1970)?;
    Ok(Reply { stratum, transmit })
}

/// NTP seconds are 32 bits since 1900 and wrap in 2036. RFC 4330 section 3:
/// with the top bit set the time is in 1968..2036 (era 0), without it in
/// 2036..2104 (era 1).
fn ntp_to_unix(secs: u32, frac: u32) -> Option<Duration> {
    let secs = u64::from(secs);
    let since_1900 = if secs & 0x8000_0000 != 0 { secs } else { secs + (1 << 32) };
    let unix = since_1900.checked_sub(NTP_UNIX_OFFSET)?;
    let nanos = (u64::from(frac) * 1_000_000_000) >> 32;
    Some(Duration::new(unix, nanos as u32))
}

/// `2001-01-01T00:00:05Z` for a time since 1970 (proleptic Gregorian,
/// Howard Hinnant's days-to-civil).
pub fn civil(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The time as it should be read from the console.
pub fn now_text() -> String {
    civil(since_epoch(SystemTime::now()))
}

/// Whether a TLS failure's text is rustls refusing a certificate for its
/// dates (`CertificateError::Expired`/`NotValidYet`, with or without
/// context).
pub fn is_certificate_time_error(reason: &str) -> bool {
    ["Expired", "NotValidYet", "certificate expired", "certificate not valid yet"]
        .iter()
        .any(|needle| reason.contains(needle))
        && !reason.contains("ExpiredRevocationList")
        && !reason.contains("revocation list expired")
}

/// The hint for a certificate date error when our clock is suspect: before
/// the build date, or never set from NTP.
pub fn wrong_clock_hint(reason: &str, now: Duration, build: u64, synced: bool) -> Option<String> {
    if !is_certificate_time_error(reason) || (now.as_secs() >= build && synced) {
        return None;
    }
    Some(format!(
        "the clock is probably wrong (it is {}{}); set rd.iguana.ntp=SERVER to get the time by NTP",
        civil(now),
        if now.as_secs() < build { ", before iguana was built" } else { " and was not set by NTP" },
    ))
}

/// `wrong_clock_hint` for this machine, now.
pub fn hint_for(reason: &str) -> Option<String> {
    let synced = Path::new(SYNCED_MARK).exists();
    wrong_clock_hint(reason, since_epoch(SystemTime::now()), build_epoch(), synced)
}

/// A failed child's error line with the wrong-clock hint appended when it
/// applies; used by PID 1 on `iguana pull` and `iguana fetch` failures.
pub fn with_hint(reason: String) -> String {
    match hint_for(&reason) {
        Some(hint) => format!("{reason}; {hint}"),
        None => reason,
    }
}

/// A believed answer: the time it was at `at`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub server: String,
    pub stratum: u8,
    pub time: Duration,
    pub at: Instant,
}

impl Sample {
    /// The server's time carried forward to now.
    pub fn now(&self) -> Duration {
        self.time + self.at.elapsed()
    }
}

/// Asks one server, `TRIES` times with `TRY_TIMEOUT` each. The time is the
/// server's transmit timestamp plus half the round trip.
pub fn query(server: &Server) -> Result<Sample, Error> {
    query_with(server, TRY_TIMEOUT, TRIES)
}

pub fn query_with(server: &Server, timeout: Duration, tries: u32) -> Result<Sample, Error> {
    let name = server.to_string();
    let addr: SocketAddr = (server.host.as_str(), server.port)
        .to_socket_addrs()
        .map_err(|source| Error::Resolve { server: name.clone(), source })?
        .next()
        .ok_or_else(|| Error::NoAddress { server: name.clone() })?;
    let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket_err = |source| Error::Socket { server: name.clone(), source };
    let socket = UdpSocket::bind(local).map_err(socket_err)?;
    // connect() makes the kernel drop datagrams from anyone else.
    socket.connect(addr).map_err(socket_err)?;
    let mut stale = None;
    for _ in 0..tries {
        let nonce: [u8; 8] = rand::random();
        let sent = Instant::now();
        socket.send(&request(nonce)).map_err(|source| Error::Send { server: name.clone(), source })?;
        let deadline = sent + timeout;
        let mut buf = [0u8; 512];
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            socket.set_read_timeout(Some(left)).map_err(socket_err)?;
            let len = match socket.recv(&mut buf) {
                Ok(len) => len,
                // ICMP port unreachable, reported on a connected socket.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(Error::Refused { server: name }),
                Err(_) => break,
            };
            let at = Instant::now();
            match parse_reply(&buf[..len], nonce) {
                Ok(reply) => {
                    let time = reply.transmit + (at - sent) / 2;
                    return Ok(Sample { server: name, stratum: reply.stratum, time, at });
                }
                // A late answer to an earlier try, or a forgery: keep listening.
                Err(BadReply::Origin) => stale = Some(BadReply::Origin),
                Err(source) => return Err(Error::Reply { server: name, source }),
            }
        }
    }
    match stale {
        Some(source) => Err(Error::Reply { server: name, source }),
        None => Err(Error::NoReply { server: name, tries, secs: timeout.as_secs() }),
    }
}

/// Sets the wall clock.
pub fn set_clock(time: Duration) -> Result<(), Error> {
    use nix::time::{clock_settime, ClockId};
    clock_settime(ClockId::CLOCK_REALTIME, time.into())
        .map_err(|source| Error::SetClock { time: civil(time), source })
}

/// `iguana sntp [--set] SERVER...`: asks the servers in order; the first
/// good answer is printed and, with `--set`, becomes the wall clock.
pub fn cli_sntp(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: iguana sntp [--set] SERVER[:PORT]...";
    let set = args.iter().any(|a| a == "--set");
    let mut servers = Vec::new();
    for arg in args.iter().filter(|a| *a != "--set") {
        servers.push(parse_server(arg).ok_or_else(|| anyhow::anyhow!("{arg:?} is not an NTP server (host[:port])\n{usage}"))?);
    }
    if servers.is_empty() {
        anyhow::bail!("{usage}");
    }
    let mut last = None;
    for server in &servers {
        match query(server) {
            Ok(sample) if set => {
                let old = now_text();
                let new = sample.now();
                set_clock(new)?;
                let _ = std::fs::write(SYNCED_MARK, format!("{}\n", sample.server));
                tracing::info!(server = %sample.server, stratum = sample.stratum, "clock set from NTP: {old} -> {}", civil(new));
                return Ok(());
            }
            Ok(sample) => {
                println!("{} {} stratum={}", sample.server, civil(sample.now()), sample.stratum);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("{}", crate::logging::chain(&e));
                last = Some(e);
            }
        }
    }
    Err(last.map(anyhow::Error::new).unwrap_or_else(|| anyhow::anyhow!("{usage}")))
}

/// PID 1's hook, after the network is up and before the first TLS
/// connection: when the clock is before the build date, set it from
/// `servers` (rd.iguana.ntp) or else the DHCP lease's NTP servers. Never
/// fatal: a clock left wrong shows up later as a TLS error with a hint.
pub fn ensure(servers: &[String], dhcp_servers: impl FnOnce() -> Vec<String>) {
    let now = since_epoch(SystemTime::now());
    let build = build_epoch();
    if now.as_secs() >= build {
        tracing::debug!(now = %civil(now), build = %civil(Duration::from_secs(build)), "clock after the build date, left as it is");
        return;
    }
    let servers = if servers.is_empty() { dhcp_servers() } else { servers.to_vec() };
    if servers.is_empty() {
        tracing::warn!(
            "clock {} is before iguana's build date {} and no NTP server is known (rd.iguana.ntp= or DHCP option 42); TLS will likely fail",
            civil(now),
            civil(Duration::from_secs(build)),
        );
        return;
    }
    tracing::info!(servers = %servers.join(","), "clock {} is before iguana's build date, asking NTP", civil(now));
    let mut args = vec!["sntp".to_string(), "--set".to_string()];
    // Every server gets its tries; the slack covers name resolution.
    let tries = TRIES.saturating_mul(u32::try_from(servers.len()).unwrap_or(u32::MAX));
    let limit = TRY_TIMEOUT.saturating_mul(tries).saturating_add(Duration::from_secs(10));
    args.extend(servers);
    if let Err(e) = crate::child::run(&args, limit) {
        tracing::warn!("clock not set: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    /// A server reply: LI/VN/mode byte, stratum, origin, transmit secs.
    fn reply(first: u8, stratum: u8, origin: [u8; 8], transmit: u32) -> Vec<u8> {
        let mut p = vec![0u8; PACKET_LEN];
        p[0] = first;
        p[1] = stratum;
        p[12..16].copy_from_slice(b"GPS\0");
        p[24..32].copy_from_slice(&origin);
        p[32..36].copy_from_slice(&transmit.to_be_bytes());
        p[40..44].copy_from_slice(&transmit.to_be_bytes());
        p[44..48].copy_from_slice(&0x8000_0000u32.to_be_bytes());
        p
    }

    fn check(packet: &[u8], expected: Result<Reply, BadReply>) {
        assert_eq!(parse_reply(packet, NONCE), expected, "packet {packet:02x?}");
    }

    /// 2026-01-01T00:00:00Z as NTP era-0 seconds.
    const NTP_2026: u32 = (1_767_225_600 + NTP_UNIX_OFFSET) as u32;

    #[test]
    fn replies() {
        let half = Duration::from_millis(500);
        let at_2026 = Duration::from_secs(1_767_225_600) + half;
        check(&reply(0x24, 2, NONCE, NTP_2026), Ok(Reply { stratum: 2, transmit: at_2026 }));
        // NTPv3 server, leap second pending (LI 1): still fine.
        check(&reply(0x5c, 1, NONCE, NTP_2026), Ok(Reply { stratum: 1, transmit: at_2026 }));
        // Trailing extension fields are ignored.
        let mut long = reply(0x24, 3, NONCE, NTP_2026);
        long.extend([0u8; 20]);
        check(&long, Ok(Reply { stratum: 3, transmit: at_2026 }));
        // Era 1: 2040-01-01 has the top bit clear.
        let secs_2040 = (2_208_988_800u64 + NTP_UNIX_OFFSET - (1 << 32)) as u32;
        check(&reply(0x24, 2, NONCE, secs_2040), Ok(Reply { stratum: 2, transmit: Duration::from_secs(2_208_988_800) + half }));
    }

    #[test]
    fn hostile_replies() {
        check(&[], Err(BadReply::Short(0)));
        check(&reply(0x24, 2, NONCE, NTP_2026)[..47], Err(BadReply::Short(47)));
        check(&request(NONCE), Err(BadReply::Mode(3)));
        check(&reply(0x25, 2, NONCE, NTP_2026), Err(BadReply::Mode(5)));
        check(&reply(0x3c, 2, NONCE, NTP_2026), Err(BadReply::Version(7)));
        check(&reply(0x04, 2, NONCE, NTP_2026), Err(BadReply::Version(0)));
        check(&reply(0x24, 2, [0; 8], NTP_2026), Err(BadReply::Origin));
        let mut kod = reply(0x24, 0, NONCE, 0);
        kod[12..16].copy_from_slice(b"RATE");
        check(&kod, Err(BadReply::KissOfDeath("RATE".into())));
        kod[12..16].copy_from_slice(&[0xff, 0, b'\n', b'X']);
        check(&kod, Err(BadReply::KissOfDeath("???X".into())));
        check(&reply(0x24, 16, NONCE, NTP_2026), Err(BadReply::Stratum(16)));
        check(&reply(0x24, 255, NONCE, NTP_2026), Err(BadReply::Stratum(255)));
        check(&reply(0xe4, 2, NONCE, NTP_2026), Err(BadReply::Unsynchronized));
        let mut zero = reply(0x24, 2, NONCE, 0);
        zero[44..48].fill(0);
        check(&zero, Err(BadReply::ZeroTransmit));
        // 1969 in era 0.
        check(&reply(0x24, 2, NONCE, (NTP_UNIX_OFFSET - 86_400) as u32), Err(BadReply::Before1970));
        for len in 0..64 {
            for byte in [0u8, 0x24, 0xff] {
                let _ = parse_reply(&vec![byte; len], NONCE);
            }
        }
    }

    #[test]
    fn requests() {
        let r = request(NONCE);
        assert_eq!(r[0], 0x23, "LI 0, version 4, mode 3");
        assert_eq!(&r[40..48], &NONCE);
        assert!(r[1..40].iter().all(|&b| b == 0));
    }

    #[test]
    fn servers() {
        let s = |host: &str, port| Some(Server { host: host.into(), port });
        let cases: &[(&str, Option<Server>)] = &[
            ("pool.ntp.org", s("pool.ntp.org", 123)),
            ("ntp1:1123", s("ntp1", 1123)),
            ("10.0.2.2:40123", s("10.0.2.2", 40123)),
            ("192.168.1.1", s("192.168.1.1", 123)),
            ("2001:db8::1", s("2001:db8::1", 123)),
            ("[2001:db8::1]:1234", s("2001:db8::1", 1234)),
            ("[fe80::1]", s("fe80::1", 123)),
            ("", None),
            ("host:", None),
            ("host:0", None),
            ("host:70000", None),
            ("host:x", None),
            ("a..b", None),
            ("-a", None),
            ("ntp/x", None),
            ("[nothex]:1", None),
            ("[::1]x", None),
            ("[::1", None),
            ("a:1:2", None),
        ];
        for (item, expected) in cases {
            assert_eq!(&parse_server(item), expected, "parse_server({item:?})");
        }
        assert_eq!(parse_server("[::1]:5").unwrap().to_string(), "[::1]:5");
        assert_eq!(parse_server("ntp").unwrap().to_string(), "ntp:123");
    }

    #[test]
    fn civil_times() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (978_307_205, "2001-01-01T00:00:05Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_767_225_599, "2025-12-31T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
        ];
        for (secs, text) in cases {
            assert_eq!(civil(Duration::from_secs(*secs)), *text, "{secs}");
        }
    }

    #[test]
    fn clock_hints() {
        let build = 1_767_225_600;
        let in_2001 = Duration::from_secs(978_307_205);
        let in_2027 = Duration::from_secs(1_800_000_000);
        let hint_2001 = "the clock is probably wrong (it is 2001-01-01T00:00:05Z, before iguana was built); set rd.iguana.ntp=SERVER to get the time by NTP";
        let cases: &[(&str, Duration, bool, Option<&str>)] = &[
            ("invalid peer certificate: NotValidYet", in_2001, false, Some(hint_2001)),
            ("invalid peer certificate: certificate not valid yet: verification time 978307205 (UNIX), but ...", in_2001, true, Some(hint_2001)),
            ("invalid peer certificate: Expired", in_2027, false, Some(
                "the clock is probably wrong (it is 2027-01-15T08:00:00Z and was not set by NTP); set rd.iguana.ntp=SERVER to get the time by NTP",
            )),
            // The clock was set by NTP after the build date: the certificate really expired.
            ("invalid peer certificate: certificate expired: verification time 1800000000 (UNIX)", in_2027, true, None),
            // Not a date problem.
            ("invalid peer certificate: UnknownIssuer", in_2001, false, None),
            ("invalid peer certificate: ExpiredRevocationList", in_2001, false, None),
            ("connection refused", in_2001, false, None),
        ];
        for (reason, now, synced, expected) in cases {
            assert_eq!(wrong_clock_hint(reason, *now, build, *synced).as_deref(), *expected, "{reason}");
        }
    }

    #[test]
    fn build_epoch_is_embedded() {
        // Some date after iguana was started, and not in the future.
        let now = since_epoch(SystemTime::now()).as_secs();
        assert!(build_epoch() > 1_735_000_000 && build_epoch() <= now + 86_400, "{}", build_epoch());
    }
}
