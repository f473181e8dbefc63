//! Reading a downloaded layer blob as a tar stream: pick the decompressor
//! from the blob's magic bytes (gzip, zstd or plain tar) and hash what comes
//! out, so the caller can check it against the config's `rootfs.diff_ids`.
//!
//! The media type is not trusted for this: registries mislabel layers, and
//! the diff_id check catches any content that is not what the image says.

use sha2::{Digest, Sha256};
use std::io::{self, BufRead, BufReader, Read};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const READ_BUFFER: usize = 256 << 10;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Sniffs the compression from the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The uncompressed tar stream of a blob, hashed as it is read.
pub struct TarStream {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
}

impl TarStream {
    pub fn new<R: Read + Send + 'static>(blob: R) -> io::Result<TarStream> {
        // Large reads: fewer syscalls and longer runs for the inflater.
        let mut blob = BufReader::with_capacity(READ_BUFFER, blob);
        let head = blob.fill_buf()?;
        let inner: Box<dyn Read + Send> = match Compression::sniff(head) {
            Compression::None => Box::new(blob),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            Compression::Zstd => Box::new(ZstdFrames::new(blob)),
        };
        Ok(TarStream {
            inner,
            hasher: Sha256::new(),
        })
    }

    /// Reads what the tar parser left (the end-of-archive padding) and
    /// returns the `sha256:HEX` digest of the whole uncompressed stream.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl Read for TarStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Chunks of the uncompressed stream handed from the inflating thread to
/// the unpacker, and how many may wait: the pipe holds at most 1 MiB.
const PIPE_CHUNK: usize = 256 << 10;
const PIPE_DEPTH: usize = 4;

/// Decompresses and hashes `blob` on a thread of its own, so that the
/// unpacker (tar parsing, file writes) runs beside the inflater on another
/// core. Returns the uncompressed stream and the thread, which gives the
/// `sha256:HEX` of the whole stream once it has read all of it.
pub fn inflate_in_thread<R: Read + Send + 'static>(
    blob: R,
) -> io::Result<(PipeReader, std::thread::JoinHandle<io::Result<String>>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
    let thread = std::thread::Builder::new()
        .name("inflate".into())
        .spawn(move || {
            let result = (|| {
                let mut stream = TarStream::new(blob)?;
                loop {
                    let mut chunk = vec![0u8; PIPE_CHUNK];
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        return stream.finish();
                    }
                    chunk.truncate(n);
                    if tx.send(Ok(chunk)).is_err() {
                        // The unpacker stopped (it failed): so do we.
                        return Err(io::Error::other("unpacker gone"));
                    }
                }
            })();
            if let Err(e) = &result {
                tx.send(Err(io::Error::new(e.kind(), e.to_string()))).ok();
            }
            result
        })?;
    Ok((PipeReader { rx, chunk: Vec::new(), at: 0 }, thread))
}

/// The reading end of [`inflate_in_thread`].
pub struct PipeReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk?;
                    self.at = 0;
                }
                // The inflater ended: at the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let rest = self.chunk.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf.get_mut(..n).unwrap_or_default().copy_from_slice(rest.get(..n).unwrap_or_default());
        self.at += n;
        Ok(n)
    }
}

/// A zstd stream of one or more frames (ruzstd's decoder reads one frame).
struct ZstdFrames<R: BufRead> {
    state: ZstdState<R>,
}

enum ZstdState<R: BufRead> {
    /// Between frames: the source, positioned at the next frame or the end.
    Between(R),
    Frame(Box<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>),
    Done,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> ZstdFrames<R> {
        ZstdFrames {
            state: ZstdState::Between(source),
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match std::mem::replace(&mut self.state, ZstdState::Done) {
                ZstdState::Done => return Ok(0),
                ZstdState::Between(mut source) => {
                    if source.fill_buf()?.is_empty() {
                        return Ok(0);
                    }
                    let decoder = ruzstd::decoding::StreamingDecoder::new(source).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
                    })?;
                    self.state = ZstdState::Frame(Box::new(decoder));
                }
                ZstdState::Frame(mut decoder) => {
                    let n = decoder.read(buf)?;
                    if n > 0 || buf.is_empty() {
                        self.state = ZstdState::Frame(decoder);
                        return Ok(n);
                    }
                    self.state = ZstdState::Between(decoder.into_inner());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TAR: &[u8] = b"pretend this is a tar stream";

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn check(blob: Vec<u8>, expected: Compression) {
        assert_eq!(Compression::sniff(&blob), expected);
        let mut stream = TarStream::new(io::Cursor::new(blob)).unwrap();
        let mut first = [0u8; 7];
        stream.read_exact(&mut first).unwrap();
        assert_eq!(&first, &TAR[..7]);
        assert_eq!(stream.finish().unwrap(), sha(TAR));
    }

    #[test]
    fn plain_gzip_and_zstd_layers_hash_the_same() {
        check(TAR.to_vec(), Compression::None);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TAR).unwrap();
        check(gz.finish().unwrap(), Compression::Gzip);

        let zstd =
            ruzstd::encoding::compress_to_vec(TAR, ruzstd::encoding::CompressionLevel::Fastest);
        check(zstd, Compression::Zstd);
    }

    #[test]
    fn multi_frame_zstd() {
        let (a, b) = TAR.split_at(10);
        let mut blob =
            ruzstd::encoding::compress_to_vec(a, ruzstd::encoding::CompressionLevel::Fastest);
        blob.extend(ruzstd::encoding::compress_to_vec(
            b,
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        check(blob, Compression::Zstd);
    }

    #[test]
    fn inflating_on_a_thread_gives_the_same_stream_and_digest() {
        let big: Vec<u8> = (0..3 * PIPE_CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&big).unwrap();
        let (mut pipe, thread) = inflate_in_thread(io::Cursor::new(gz.finish().unwrap())).unwrap();
        let mut out = Vec::new();
        pipe.read_to_end(&mut out).unwrap();
        assert!(out == big);
        assert_eq!(thread.join().unwrap().unwrap(), sha(&big));

        let mut corrupt = GZIP_MAGIC.to_vec();
        corrupt.extend_from_slice(b"garbage garbage garbage");
        let (mut pipe, thread) = inflate_in_thread(io::Cursor::new(corrupt)).unwrap();
        assert!(pipe.read_to_end(&mut Vec::new()).is_err());
        assert!(thread.join().unwrap().is_err());
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut blob = GZIP_MAGIC.to_vec();
        blob.extend_from_slice(b"garbage garbage garbage");
        let stream = TarStream::new(io::Cursor::new(blob)).unwrap();
        assert!(stream.finish().is_err());
    }
}
