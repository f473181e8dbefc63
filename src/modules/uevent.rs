//! Kernel uevent messages as read from a `NETLINK_KOBJECT_UEVENT` socket.
//!
//! A message is `ACTION@DEVPATH`, then `KEY=VALUE` fields, each ended by a
//! NUL (lib/kobject_uevent.c). Parsing is pure and strict about the frame,
//! lenient inside it: a message that is not a kernel uevent is an error the
//! caller logs at debug level and drops; an odd field is skipped.

/// The kernel's own limit is 2048 bytes of fields (`UEVENT_BUFFER_SIZE`)
/// plus the header; anything much longer is not from the kernel.
pub const MAX_LEN: usize = 8192;

/// The fields hotplug acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: Option<String>,
    pub modalias: Option<String>,
}

impl Uevent {
    /// The modalias to find drivers for: only new devices ask for one.
    pub fn wants_driver(&self) -> Option<&str> {
        (self.action == "add").then_some(self.modalias.as_deref()).flatten()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{len} bytes, longer than any uevent")]
    TooLong { len: usize },
    #[error("no NUL-terminated ACTION@DEVPATH header")]
    Header,
    #[error("a udev message, not the kernel's")]
    Udev,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("no {0} field")]
    Missing(&'static str),
    #[error("header {header:?} disagrees with the fields")]
    Mismatch { header: String },
}

pub fn parse(buf: &[u8]) -> Result<Uevent, ParseError> {
    if buf.len() > MAX_LEN {
        return Err(ParseError::TooLong { len: buf.len() });
    }
    if buf.starts_with(b"libudev\0") {
        return Err(ParseError::Udev);
    }
    let text = std::str::from_utf8(buf).map_err(|_| ParseError::NotUtf8)?;
    let mut parts = text.split('\0');
    let header = parts.next().unwrap_or_default();
    if !text.contains('\0') || !header.contains('@') {
        return Err(ParseError::Header);
    }
    let (mut action, mut devpath, mut subsystem, mut modalias) = (None, None, None, None);
    for field in parts {
        let Some((key, value)) = field.split_once('=') else { continue };
        let slot = match key {
            "ACTION" => &mut action,
            "DEVPATH" => &mut devpath,
            "SUBSYSTEM" => &mut subsystem,
            "MODALIAS" => &mut modalias,
            _ => continue,
        };
        *slot = Some(value.to_owned());
    }
    let action: String = action.ok_or(ParseError::Missing("ACTION"))?;
    let devpath: String = devpath.ok_or(ParseError::Missing("DEVPATH"))?;
    if header != format!("{action}@{devpath}") {
        return Err(ParseError::Mismatch { header: header.to_owned() });
    }
    let modalias = modalias.filter(|m| !m.is_empty() && !m.chars().any(char::is_control));
    Ok(Uevent { action, devpath, subsystem, modalias })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str, devpath: &str, subsystem: Option<&str>, modalias: Option<&str>) -> Uevent {
        Uevent {
            action: action.into(),
            devpath: devpath.into(),
            subsystem: subsystem.map(Into::into),
            modalias: modalias.map(Into::into),
        }
    }

    fn check(input: &[u8], expected: Result<Uevent, ParseError>) {
        assert_eq!(parse(input), expected, "parse({:?})", String::from_utf8_lossy(input));
    }

    #[test]
    fn messages() {
        // As a QEMU guest sends it when a virtio-scsi controller is hot-added.
        check(
            b"add@/devices/pci0000:00/0000:00:05.0/virtio3\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:05.0/virtio3\0SUBSYSTEM=virtio\0MODALIAS=virtio:d00000008v00001AF4\0SEQNUM=1234\0",
            Ok(ev("add", "/devices/pci0000:00/0000:00:05.0/virtio3", Some("virtio"), Some("virtio:d00000008v00001AF4"))),
        );
        check(
            b"bind@/devices/virtual/x\0ACTION=bind\0DEVPATH=/devices/virtual/x\0DRIVER=y\0",
            Ok(ev("bind", "/devices/virtual/x", None, None)),
        );
        // Without the last NUL, odd fields skipped, empty MODALIAS dropped.
        check(
            b"add@/m\0junk\0=\0ACTION=add\0DEVPATH=/m\0MODALIAS=",
            Ok(ev("add", "/m", None, None)),
        );
        check(b"", Err(ParseError::Header));
        check(b"add@/devices/x", Err(ParseError::Header));
        check(b"no header\0ACTION=add\0", Err(ParseError::Header));
        check(b"libudev\0\xfe\xed\xca\xfe", Err(ParseError::Udev));
        check(b"add@/x\0ACTION=add\0DEVPATH=/x\0MODALIAS=\xff\0", Err(ParseError::NotUtf8));
        check(b"add@/x\0DEVPATH=/x\0", Err(ParseError::Missing("ACTION")));
        check(b"add@/x\0ACTION=add\0", Err(ParseError::Missing("DEVPATH")));
        check(
            b"add@/x\0ACTION=remove\0DEVPATH=/x\0",
            Err(ParseError::Mismatch { header: "add@/x".into() }),
        );
        let huge = [b'a'; MAX_LEN + 1];
        check(&huge, Err(ParseError::TooLong { len: MAX_LEN + 1 }));
        let mut garbage = b"add@/x\0".to_vec();
        garbage.extend((0..=255u8).cycle().take(4000));
        assert!(parse(&garbage).is_err());
    }

    #[test]
    fn only_added_devices_want_drivers() {
        let with = |action| ev(action, "/d", None, Some("pci:v1"));
        assert_eq!(with("add").wants_driver(), Some("pci:v1"));
        assert_eq!(with("remove").wants_driver(), None);
        assert_eq!(with("change").wants_driver(), None);
        assert_eq!(ev("add", "/d", None, None).wants_driver(), None);
    }
}
