//! A layer blob as it downloads, read by its unpacker at the same time.
//!
//! The download appends the registry's bytes to the blob's partial file
//! (hashing them on the way, [`super::registry`]) and says how far the file
//! goes; the unpacker's [`FeedReader`] reads behind it and waits when it has
//! caught up, so inflating and unpacking start with the first bytes instead
//! of after the last. The file is what makes a broken-off transfer resumable
//! with a Range request without the unpacker noticing, and what holds a
//! layer whose turn has not come (the flattened rootfs applies layers in
//! order). Bytes the unpacker has read are released from the file as it
//! goes (a hole punched in it) unless the blob is to be kept, so a blob on
//! a tmpfs does not sit in RAM beside its unpacked layer.
//!
//! The reader reaches its end only once the download has verified the
//! blob's size and digest: a layer whose content turns out wrong at the
//! end fails its unpack, whose temporary directory is then removed.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Bytes read before they are released from the file in one go.
const PUNCH_EVERY: u64 = 4 << 20;

/// One layer blob's download, as its reader sees it.
#[derive(Default)]
pub struct Feed {
    state: Mutex<State>,
    cond: Condvar,
}

#[derive(Default)]
struct State {
    file: Option<Arc<File>>,
    /// Bytes in the file so far.
    len: u64,
    /// `Some(true)`: verified, `len` is the whole blob; `Some(false)`: failed.
    end: Option<bool>,
    /// Whether read bytes may be punched out of the file.
    punch: bool,
}

impl Feed {
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking holder cannot leave the counters half-updated.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The blob's file (a read-write handle when `punch`), `len` bytes so far.
    pub fn open(&self, file: File, len: u64, punch: bool) {
        let mut st = self.lock();
        st.file = Some(Arc::new(file));
        st.len = len;
        st.punch = punch;
        self.cond.notify_all();
    }

    /// The file now holds `len` bytes of the blob.
    pub fn advance(&self, len: u64) {
        let mut st = self.lock();
        st.len = len;
        self.cond.notify_all();
    }

    /// The download is over: verified or not. Only the first call counts.
    pub fn end(&self, verified: bool) {
        let mut st = self.lock();
        if st.end.is_none() {
            st.end = Some(verified && st.file.is_some());
        }
        self.cond.notify_all();
    }

    /// Whether the download ended and failed.
    pub fn failed(&self) -> bool {
        self.lock().end == Some(false)
    }

    /// Reads the blob from its first byte.
    pub fn reader(self: &Arc<Self>) -> FeedReader {
        FeedReader {
            feed: Arc::clone(self),
            pos: 0,
            punched: 0,
        }
    }
}

/// Ends its feed as failed when dropped before the download said how it
/// went (a cancelled or failed download), so its reader never waits forever.
pub struct EndOnDrop(pub Arc<Feed>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end(false);
    }
}

/// Reads a [`Feed`] behind its download.
pub struct FeedReader {
    feed: Arc<Feed>,
    pos: u64,
    punched: u64,
}

impl FeedReader {
    /// Waits until bytes past `pos` are in the file, or the end.
    /// `None` at the verified end.
    fn wait(&self) -> io::Result<Option<(Arc<File>, u64, bool)>> {
        let mut st = self.feed.lock();
        loop {
            if let Some(file) = &st.file {
                if self.pos < st.len {
                    return Ok(Some((Arc::clone(file), st.len, st.punch)));
                }
            }
            match st.end {
                Some(true) => return Ok(None),
                Some(false) => return Err(io::Error::other("the layer's download failed")),
                None => {
                    st = self
                        .feed
                        .cond
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
    }
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let Some((file, len, punch)) = self.wait()? else {
            return Ok(0);
        };
        let want = usize::try_from(len - self.pos).unwrap_or(usize::MAX).min(buf.len());
        let n = file.read_at(buf.get_mut(..want).unwrap_or_default(), self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the blob file is shorter than written"));
        }
        self.pos += n as u64;
        if punch && self.pos - self.punched >= PUNCH_EVERY {
            // Whole pages only; the tail goes with the file.
            let upto = self.pos & !0xfff;
            let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
            if let Err(e) = rustix::fs::fallocate(&*file, flags, self.punched, upto - self.punched) {
                tracing::debug!(%e, "release read bytes of a blob");
            }
            self.punched = upto;
        }
        Ok(n)
    }
}

/// Which of the layers unpacking side by side are done, so that one can
/// wait for those below it (their trees lend it directory owners and modes).
#[derive(Default)]
pub struct LayersDone {
    done: Mutex<Vec<Option<bool>>>,
    cond: Condvar,
}

impl LayersDone {
    pub fn new(layers: usize) -> Arc<LayersDone> {
        Arc::new(LayersDone { done: Mutex::new(vec![None; layers]), cond: Condvar::new() })
    }

    /// Layer `index` is done: unpacked into place, or failed.
    pub fn set(&self, index: usize, ok: bool) {
        let mut done = self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = done.get_mut(index) {
            slot.get_or_insert(ok);
        }
        self.cond.notify_all();
    }

    /// Waits until every layer below `index` is in place; fails if one failed.
    pub fn wait_below(&self, index: usize) -> io::Result<()> {
        let mut done = self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let below = done.get(..index).unwrap_or_default();
            if below.contains(&Some(false)) {
                return Err(io::Error::other("a layer below failed"));
            }
            if below.iter().all(|d| *d == Some(true)) {
                return Ok(());
            }
            done = self.cond.wait(done).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn file_with(dir: &std::path::Path, bytes: &[u8]) -> (File, File) {
        let path = dir.join("blob");
        let mut w = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        w.write_all(bytes).unwrap();
        let r = w.try_clone().unwrap();
        (w, r)
    }

    #[test]
    fn the_reader_follows_the_download_and_ends_only_when_verified() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, r) = file_with(dir.path(), b"");
        let feed = Feed::new();
        let mut reader = feed.reader();
        let follower = std::thread::spawn(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        });
        feed.open(r, 0, false);
        for (i, part) in [&b"first "[..], b"second ", b"third"].iter().enumerate() {
            w.write_all(part).unwrap();
            feed.advance([6, 13, 18][i]);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!follower.is_finished(), "the reader ended before the verdict");
        feed.end(true);
        assert_eq!(follower.join().unwrap().unwrap(), b"first second third");
    }

    #[test]
    fn a_failed_download_is_a_read_error_and_so_is_a_dropped_one() {
        let dir = tempfile::tempdir().unwrap();
        for fail in [|f: &Arc<Feed>| f.end(false), |f: &Arc<Feed>| drop(EndOnDrop(Arc::clone(f)))] {
            let (_w, r) = file_with(dir.path(), b"abc");
            let feed = Feed::new();
            feed.open(r, 3, false);
            let mut reader = feed.reader();
            let mut first = [0u8; 3];
            reader.read_exact(&mut first).unwrap();
            fail(&feed);
            // A later verdict does not undo the failure.
            feed.end(true);
            assert!(reader.read(&mut first).is_err());
        }
    }

    #[test]
    fn a_layer_waits_for_those_below_and_fails_with_them() {
        let done = LayersDone::new(3);
        assert!(done.wait_below(0).is_ok());
        let waiter = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || done.wait_below(2))
        };
        done.set(1, true);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!waiter.is_finished(), "layer 0 is not done yet");
        done.set(0, true);
        assert!(waiter.join().unwrap().is_ok());
        done.set(1, false); // too late: the first verdict stays
        done.set(2, false);
        let failed = LayersDone::new(2);
        failed.set(0, false);
        assert!(failed.wait_below(2).is_err());
    }

    #[test]
    fn read_bytes_are_released_unless_the_blob_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; (3 * PUNCH_EVERY) as usize];
        for punch in [true, false] {
            let (w, r) = file_with(dir.path(), &data);
            let feed = Feed::new();
            feed.open(r, data.len() as u64, punch);
            feed.end(true);
            let mut out = Vec::new();
            feed.reader().read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
            let meta = w.metadata().unwrap();
            assert_eq!(meta.len(), data.len() as u64, "the size stays");
            let allocated = meta.blocks() * 512;
            if punch {
                assert!(allocated < PUNCH_EVERY + 4096, "{allocated} bytes still allocated");
            } else {
                assert!(allocated >= data.len() as u64, "{allocated} bytes allocated");
            }
        }
    }
}
