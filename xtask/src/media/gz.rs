//! A gzip stream of independent members compressed on every core, which `gzip -d` and
//! `tar -xzf` read as one.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, Write},
    sync::mpsc,
};

use sha2::{Digest, Sha256};

use super::{read_some, READ_BUF};

/// Bytes of tar stream per gzip member.
pub const MEMBER: usize = 4 << 20;

/// A member's number, the piece it came from (for reuse) and the member.
pub type Compressed = (u64, Vec<u8>, io::Result<Vec<u8>>);

/// Cuts what is written into `MEMBER`-byte pieces and gzips them on the rayon pool for
/// [`write_members`]. Two pieces more than there are threads (eight at most) are in flight, so
/// memory stays flat however large the tree.
pub struct GzMembers {
    /// Always `MEMBER` bytes long; `filled` of them are stream.
    pub piece: Vec<u8>,
    pub filled: usize,
    pub submitted: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub free: Vec<(Vec<u8>, Vec<u8>)>,
    pub to_writer: mpsc::Sender<Compressed>,
    pub recycled: mpsc::Receiver<(Vec<u8>, Vec<u8>)>,
}

impl GzMembers {
    pub fn new(
        to_writer: mpsc::Sender<Compressed>,
        recycled: mpsc::Receiver<(Vec<u8>, Vec<u8>)>,
    ) -> Self {
        GzMembers {
            piece: vec![0; MEMBER],
            filled: 0,
            submitted: 0,
            in_flight: 0,
            max_in_flight: (rayon::current_num_threads() as u64 + 2).min(8),
            free: Vec::new(),
            to_writer,
            recycled,
        }
    }

    /// Reads `size` bytes of `file` into the stream, then the tar padding. False when the file
    /// is not `size` bytes long (any more).
    pub fn append_file(
        &mut self,
        file: &mut File,
        size: u64,
        hasher: &mut Sha256,
    ) -> io::Result<bool> {
        let mut left = size;
        while left > 0 {
            if self.filled == MEMBER {
                self.submit()?;
            }
            let room = (MEMBER - self.filled)
                .min(READ_BUF)
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let target = &mut self.piece[self.filled..self.filled + room];
            let n = read_some(file, target)?;
            if n == 0 {
                return Ok(false);
            }
            hasher.update(&target[..n]);
            self.filled += n;
            left -= n as u64;
        }
        let padding = (512 - size % 512) % 512;
        self.write_all(&[0; 512][..padding as usize])?;
        Ok(read_some(file, &mut [0])? == 0)
    }

    fn submit(&mut self) -> io::Result<()> {
        while self.in_flight >= self.max_in_flight {
            let buffers = recv_in_pool(&self.recycled)?;
            self.free.push(buffers);
            self.in_flight -= 1;
        }
        let (fresh, mut member) = self
            .free
            .pop()
            .unwrap_or_else(|| (vec![0; MEMBER], Vec::new()));
        let piece = std::mem::replace(&mut self.piece, fresh);
        let len = std::mem::take(&mut self.filled);
        let (number, to_writer) = (self.submitted, self.to_writer.clone());
        self.submitted += 1;
        self.in_flight += 1;
        rayon::spawn(move || {
            let result = gzip_member(&piece[..len], &mut member).map(|()| member);
            let _ = to_writer.send((number, piece, result));
        });
        Ok(())
    }

    /// Waits until every piece is written: a pool thread must not go on to wait for the writer
    /// while pieces it should compress are still queued behind it.
    fn drain(&mut self) -> io::Result<()> {
        while self.in_flight > 0 {
            recv_in_pool(&self.recycled)?;
            self.in_flight -= 1;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<()> {
        if self.filled > 0 {
            self.submit()?;
        }
        self.drain()
    }
}

impl Drop for GzMembers {
    fn drop(&mut self) {
        let _ = self.drain();
    }
}

impl Write for GzMembers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.filled == MEMBER {
            self.submit()?;
        }
        let n = buf.len().min(MEMBER - self.filled);
        self.piece[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes members to `out` in order as they come in, handing their buffers back for reuse,
/// until every sender is gone.
pub fn write_members(
    mut out: impl Write,
    compressed: mpsc::Receiver<Compressed>,
    recycle: mpsc::Sender<(Vec<u8>, Vec<u8>)>,
) -> io::Result<()> {
    let mut waiting = BTreeMap::new();
    let mut next = 0;
    for (number, piece, member) in compressed {
        waiting.insert(number, (piece, member?));
        while let Some((piece, mut member)) = waiting.remove(&next) {
            out.write_all(&member)?;
            next += 1;
            member.clear();
            let _ = recycle.send((piece, member));
        }
    }
    if !waiting.is_empty() {
        return Err(io::Error::other(
            "a compressed piece of the archive went missing",
        ));
    }
    out.flush()
}

/// Waits for a message; on a pool thread it runs other pool work meanwhile, since the work it
/// waits for may be queued behind it.
pub fn recv_in_pool<T>(rx: &mpsc::Receiver<T>) -> io::Result<T> {
    let gone = || io::Error::other("the archive writer stopped");
    if rayon::current_thread_index().is_none() {
        return rx.recv().map_err(|_| gone());
    }
    loop {
        match rx.try_recv() {
            Ok(message) => return Ok(message),
            Err(mpsc::TryRecvError::Disconnected) => return Err(gone()),
            Err(mpsc::TryRecvError::Empty) => {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// One gzip member holding `data`: deflated at the fast level when it compresses, otherwise in
/// stored blocks, which cost no more than a copy (photos and PDFs do not compress).
pub fn gzip_member(data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    if compresses(data) {
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        gz.write_all(data)?;
        gz.finish()?;
        return Ok(());
    }
    const BLOCK: usize = 0xffff;
    out.reserve(data.len() + data.len() / BLOCK * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    let mut blocks = data.chunks(BLOCK).peekable();
    while let Some(block) = blocks.next() {
        let len = block.len() as u16;
        out.push(u8::from(blocks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(())
}

/// Whether deflating a few samples of `data` at the fast level saves at least 3 %.
pub fn compresses(data: &[u8]) -> bool {
    const SAMPLE: usize = 8 * 1024;
    const SAMPLES: usize = 4;
    let mut deflate = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut scratch = vec![0; SAMPLE + SAMPLE / 8];
    let (mut taken, mut made) = (0, 0);
    for i in 0..SAMPLES {
        let start = i * data.len().saturating_sub(SAMPLE) / (SAMPLES - 1);
        let sample = &data[start..(start + SAMPLE).min(data.len())];
        deflate.reset();
        let before = deflate.total_out();
        if deflate
            .compress(sample, &mut scratch, flate2::FlushCompress::Finish)
            .is_err()
        {
            return false;
        }
        taken += sample.len() as u64;
        made += deflate.total_out() - before;
        if sample.len() == data.len() {
            break;
        }
    }
    made * 100 < taken * 97
}
