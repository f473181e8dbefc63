//! newc cpio archives as the kernel reads them (buffer-format.rst), written
//! here for the tests of iguana's reader and of `iguana extension inspect`.

/// One newc entry: `name`, `mode` (file type included), `data`.
pub fn entry(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let fields = [1, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    let mut out = b"070701".to_vec();
    for f in fields {
        out.extend(format!("{f:08x}").bytes());
    }
    out.extend(name.bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}
