//! Gzip on every core. The stream is cut into fixed 4 MiB blocks and each block becomes its own
//! gzip member; RFC 1952 allows concatenated members and every reader in this space (Go's
//! `gzip.Reader`, containerd, flate2's `MultiGzDecoder`) reads them as one stream. Fixed block
//! boundaries keep the output a pure function of the input, so layer digests stay reproducible.

use flate2::write::GzEncoder;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

const BLOCK: usize = 4 << 20;

pub struct ParallelGzip<W: Write> {
    inner: W,
    buf: Vec<u8>,
    pending: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    members: usize,
}

fn compress(block: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut e = GzEncoder::new(
        Vec::with_capacity(block.len() / 2 + 64),
        flate2::Compression::default(),
    );
    e.write_all(&block)?;
    e.finish()
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(inner: W) -> Self {
        ParallelGzip {
            inner,
            buf: Vec::with_capacity(BLOCK),
            pending: VecDeque::new(),
            max_in_flight: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            members: 0,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.pending.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        self.pending
            .push_back(std::thread::spawn(move || compress(block)));
        self.members += 1;
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(h) = self.pending.pop_front() {
            let data = h
                .join()
                .map_err(|_| io::Error::other("gzip worker panicked"))??;
            self.inner.write_all(&data)?;
        }
        Ok(())
    }

    /// Compress what is left and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        // An empty input still makes one (empty) member: a valid gzip file.
        if !self.buf.is_empty() || self.members == 0 {
            self.submit()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn members_decode_to_the_input_and_output_is_reproducible() {
        let data: Vec<u8> = (0..(BLOCK * 2 + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let encode = |d: &[u8]| {
            let mut z = ParallelGzip::new(Vec::new());
            for chunk in d.chunks(100_000) {
                z.write_all(chunk).unwrap();
            }
            z.finish().unwrap()
        };
        let a = encode(&data);
        assert_eq!(a, encode(&data), "same input, same bytes");
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let empty = encode(&[]);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
