//! Interop shim: repairs the HTTP/2 `:authority` that several gRPC clients send over Unix sockets.
//!
//! gRPC C-core (Python, C++, Ruby, PHP; so py-spiffe) since 1.57 sends the percent-encoded socket
//! path as `:authority` (e.g. `tmp%2Fagent%2Fapi.sock`), and grpc-java and grpc-swift send the
//! path itself. The `h2` server under tonic rejects such a request with `RST_STREAM
//! PROTOCOL_ERROR` before any service sees it (hyperium/h2#487), while SPIRE's Go server accepts
//! it. The authority means nothing on a Unix socket, so this reader sits between the socket and
//! the HTTP/2 server and replaces an authority that is not a valid `host[:port]` with
//! `localhost`.
//!
//! How: the client-to-server byte stream is split into HTTP/2 frames; header blocks (HEADERS
//! plus CONTINUATION) are HPACK-decoded with a decoder that tracks the client's dynamic table.
//! As long as every authority is valid, the original bytes are passed on untouched (so clients
//! such as go-spiffe and the Rust `spiffe` crate see no change). From the first block that needs
//! a repair on, every block is re-encoded as literals without indexing, which never touch the
//! server's dynamic table, so the server's HPACK state can no longer disagree with the client's.
//! Anything that is not HTTP/2 with prior knowledge is passed through unchanged. Server-to-client
//! bytes are never touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which the server keeps.
const MAX_FRAME: usize = 16_384;
/// Largest frame payload accepted from a client (the server refuses anything above 16 KiB).
const MAX_CLIENT_FRAME: usize = 1 << 20;
/// Largest header block accepted (HEADERS plus CONTINUATION fragments).
const MAX_BLOCK: usize = 1 << 20;
/// SETTINGS_HEADER_TABLE_SIZE the server advertises (the HTTP/2 default; h2 keeps it).
const MAX_TABLE_SIZE: usize = 4096;
/// The authority put in place of an invalid one.
const REPLACEMENT: &[u8] = b"localhost";

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// HPACK static table (RFC 7541 Appendix A), index 1 first.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Bit lengths of the HPACK Huffman code (RFC 7541 Appendix B) for symbols 0..=255 and EOS
/// (256). The code is canonical, so the codes follow from the lengths.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The canonical Huffman codes, as (code, length) per symbol.
fn huffman_codes() -> &'static [(u32, u8); 257] {
    static CODES: std::sync::OnceLock<[(u32, u8); 257]> = std::sync::OnceLock::new();
    CODES.get_or_init(|| {
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (HUFFMAN_LENGTHS[s], s));
        let mut out = [(0u32, 0u8); 257];
        let mut code: u32 = 0;
        let mut prev_len = HUFFMAN_LENGTHS[order[0]];
        for (i, &s) in order.iter().enumerate() {
            let len = HUFFMAN_LENGTHS[s];
            if i > 0 {
                code = (code + 1) << (len - prev_len);
            }
            prev_len = len;
            out[s] = (code, len);
        }
        out
    })
}

/// Decodes a Huffman-coded string (bit-by-bit over the canonical code).
fn huffman_decode(src: &[u8]) -> io::Result<Vec<u8>> {
    // For each length, the first code and the symbols of that length in order.
    static TABLE: std::sync::OnceLock<Vec<(u8, u32, Vec<u16>)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let codes = huffman_codes();
        let mut by_len: Vec<(u8, u32, Vec<u16>)> = Vec::new();
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (HUFFMAN_LENGTHS[s], s));
        for s in order {
            let (code, len) = codes[s];
            match by_len.last_mut() {
                Some((l, _, syms)) if *l == len => syms.push(s as u16),
                _ => by_len.push((len, code, vec![s as u16])),
            }
        }
        by_len
    });
    let mut out = Vec::with_capacity(src.len() * 8 / 5);
    let mut acc: u32 = 0;
    let mut acc_len: u8 = 0;
    for &byte in src {
        for bit in (0..8).rev() {
            acc = (acc << 1) | u32::from((byte >> bit) & 1);
            acc_len += 1;
            if acc_len < 5 {
                continue;
            }
            if let Some((_, first, syms)) = table.iter().find(|(l, _, _)| *l == acc_len)
                && acc >= *first
                && acc - first < syms.len() as u32
            {
                {
                    let sym = syms[(acc - first) as usize];
                    if sym == 256 {
                        return Err(invalid("huffman string contains EOS"));
                    }
                    out.push(sym as u8);
                    acc = 0;
                    acc_len = 0;
                }
            }
            if acc_len >= 30 {
                return Err(invalid("invalid huffman code"));
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the EOS prefix).
    if acc_len > 7 || acc != (1u32 << acc_len) - 1 {
        return Err(invalid("invalid huffman padding"));
    }
    Ok(out)
}

#[cfg(test)]
fn huffman_encode(src: &[u8]) -> Vec<u8> {
    let codes = huffman_codes();
    let mut out = Vec::new();
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let (code, len) = codes[b as usize];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
    }
    out
}

/// Reads an HPACK integer with an `n`-bit prefix at `src[*pos]`.
fn read_int(src: &[u8], pos: &mut usize, n: u8) -> io::Result<usize> {
    let first = *src
        .get(*pos)
        .ok_or_else(|| invalid("truncated hpack integer"))?;
    *pos += 1;
    let mask: u8 = if n == 8 { 0xff } else { (1u8 << n) - 1 };
    let mut value = usize::from(first & mask);
    if value < usize::from(mask) {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *src
            .get(*pos)
            .ok_or_else(|| invalid("truncated hpack integer"))?;
        *pos += 1;
        if shift > 28 {
            return Err(invalid("hpack integer too large"));
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

fn read_string(src: &[u8], pos: &mut usize) -> io::Result<Vec<u8>> {
    let huffman = src.get(*pos).is_some_and(|b| b & 0x80 != 0);
    let len = read_int(src, pos, 7)?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= src.len())
        .ok_or_else(|| invalid("truncated hpack string"))?;
    let raw = &src[*pos..end];
    *pos = end;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

fn write_int(out: &mut Vec<u8>, first_bits: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first_bits | value as u8);
        return;
    }
    out.push(first_bits | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    write_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// HPACK decoder state for one connection (the client's encoder's dynamic table).
#[derive(Debug, Default)]
struct Decoder {
    /// Newest first.
    table: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
}

type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

impl Decoder {
    fn new() -> Self {
        Self {
            max_size: MAX_TABLE_SIZE,
            ..Self::default()
        }
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let entry = name.len() + value.len() + 32;
        if entry > self.max_size {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.size += entry;
        self.table.push_front((name, value));
        self.evict();
    }

    fn get(&self, index: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
        if index == 0 {
            return Err(invalid("hpack index 0"));
        }
        if index <= STATIC_TABLE.len() {
            let (n, v) = STATIC_TABLE[index - 1];
            return Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        self.table
            .get(index - STATIC_TABLE.len() - 1)
            .cloned()
            .ok_or_else(|| invalid("hpack index out of range"))
    }

    fn decode(&mut self, block: &[u8]) -> io::Result<HeaderList> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                let idx = read_int(block, &mut pos, 7)?;
                out.push(self.get(idx)?);
            } else if b & 0xc0 == 0x40 {
                let idx = read_int(block, &mut pos, 6)?;
                let name = if idx == 0 {
                    read_string(block, &mut pos)?
                } else {
                    self.get(idx)?.0
                };
                let value = read_string(block, &mut pos)?;
                self.insert(name.clone(), value.clone());
                out.push((name, value));
            } else if b & 0xe0 == 0x20 {
                let size = read_int(block, &mut pos, 5)?;
                if size > MAX_TABLE_SIZE {
                    return Err(invalid(
                        "hpack table size update above the advertised limit",
                    ));
                }
                self.max_size = size;
                self.evict();
            } else {
                // 0000xxxx without indexing, 0001xxxx never indexed.
                let idx = read_int(block, &mut pos, 4)?;
                let name = if idx == 0 {
                    read_string(block, &mut pos)?
                } else {
                    self.get(idx)?.0
                };
                let value = read_string(block, &mut pos)?;
                out.push((name, value));
            }
        }
        Ok(out)
    }
}

fn authority_is_valid(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// A header block being collected.
#[derive(Debug)]
struct Pending {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The original frames, passed on when no rewrite is needed.
    raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preface,
    Frames,
    Passthrough,
}

/// The frame-level rewriter (no I/O).
#[derive(Debug)]
struct Rewriter {
    stage: Stage,
    input: Vec<u8>,
    decoder: Decoder,
    pending: Option<Pending>,
    /// Sticky: once a block was re-encoded, all later blocks are.
    reencode: bool,
}

impl Rewriter {
    fn new() -> Self {
        Self {
            stage: Stage::Preface,
            input: Vec::new(),
            decoder: Decoder::new(),
            pending: None,
            reencode: false,
        }
    }

    /// Consumes `data`, appending what may go to the server to `out`.
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.stage == Stage::Passthrough {
            out.extend_from_slice(data);
            return Ok(());
        }
        self.input.extend_from_slice(data);
        if self.stage == Stage::Preface {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                self.stage = Stage::Passthrough;
                out.append(&mut self.input);
                return Ok(());
            }
            if self.input.len() < PREFACE.len() {
                return Ok(());
            }
            out.extend(self.input.drain(..PREFACE.len()));
            self.stage = Stage::Frames;
        }
        loop {
            if self.input.len() < FRAME_HEADER_LEN {
                return Ok(());
            }
            let len = (usize::from(self.input[0]) << 16)
                | (usize::from(self.input[1]) << 8)
                | usize::from(self.input[2]);
            if len > MAX_CLIENT_FRAME {
                return Err(invalid("http/2 frame too large"));
            }
            if self.input.len() < FRAME_HEADER_LEN + len {
                return Ok(());
            }
            let frame: Vec<u8> = self.input.drain(..FRAME_HEADER_LEN + len).collect();
            self.frame(&frame, out)?;
        }
    }

    fn frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let ty = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        match (ty, &mut self.pending) {
            (TYPE_HEADERS, None) => {
                let mut p = payload;
                let mut pad = 0usize;
                if flags & FLAG_PADDED != 0 {
                    pad = usize::from(*p.first().ok_or_else(|| invalid("bad padded frame"))?);
                    p = &p[1..];
                }
                let mut priority = None;
                if flags & FLAG_PRIORITY != 0 {
                    if p.len() < 5 {
                        return Err(invalid("bad priority field"));
                    }
                    let mut pr = [0u8; 5];
                    pr.copy_from_slice(&p[..5]);
                    priority = Some(pr);
                    p = &p[5..];
                }
                if pad > p.len() {
                    return Err(invalid("padding exceeds frame"));
                }
                let fragment = &p[..p.len() - pad];
                self.pending = Some(Pending {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    block: fragment.to_vec(),
                    raw: frame.to_vec(),
                });
                if flags & FLAG_END_HEADERS != 0 {
                    self.finish(out)?;
                }
                Ok(())
            }
            (TYPE_CONTINUATION, Some(p)) if p.stream_id == stream_id => {
                if p.block.len() + payload.len() > MAX_BLOCK {
                    return Err(invalid("header block too large"));
                }
                p.block.extend_from_slice(payload);
                p.raw.extend_from_slice(frame);
                if flags & FLAG_END_HEADERS != 0 {
                    self.finish(out)?;
                }
                Ok(())
            }
            (_, Some(_)) => Err(invalid("frame interleaved in a header block")),
            (_, None) => {
                out.extend_from_slice(frame);
                Ok(())
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let mut headers = self.decoder.decode(&p.block)?;
        let mut repaired = false;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !authority_is_valid(value) {
                *value = REPLACEMENT.to_vec();
                repaired = true;
            }
        }
        if repaired && !self.reencode {
            tracing::debug!("rewriting invalid http/2 authority from a unix socket client");
            self.reencode = true;
        }
        if !self.reencode {
            out.extend_from_slice(&p.raw);
            return Ok(());
        }
        let mut block = Vec::new();
        for (name, value) in &headers {
            // Literal without indexing, literal name, no Huffman.
            block.push(0x00);
            write_string(&mut block, name);
            write_string(&mut block, value);
        }
        let mut first = true;
        let mut rest: &[u8] = &block;
        loop {
            let room = if first && p.priority.is_some() {
                MAX_FRAME - 5
            } else {
                MAX_FRAME
            };
            let take = rest.len().min(room);
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let last = rest.is_empty();
            let mut flags = 0u8;
            if last {
                flags |= FLAG_END_HEADERS;
            }
            let (ty, extra) = if first {
                if p.end_stream {
                    flags |= FLAG_END_STREAM;
                }
                if p.priority.is_some() {
                    flags |= FLAG_PRIORITY;
                }
                (TYPE_HEADERS, p.priority)
            } else {
                (TYPE_CONTINUATION, None)
            };
            let len = chunk.len() + extra.map_or(0, |e| e.len());
            out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
            out.extend_from_slice(&p.stream_id.to_be_bytes());
            if let Some(e) = extra {
                out.extend_from_slice(&e);
            }
            out.extend_from_slice(chunk);
            first = false;
            if last {
                return Ok(());
            }
        }
    }
}

/// A byte stream whose client-to-server direction has its HTTP/2 `:authority` repaired.
#[derive(Debug)]
pub struct AuthorityRewrite<S> {
    inner: S,
    rewriter: Rewriter,
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

impl<S> AuthorityRewrite<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if got.is_empty() {
                this.eof = true;
                // Whatever was buffered goes on as is: the server reports the truncation.
                this.out.append(&mut this.rewriter.input);
                continue;
            }
            this.rewriter.feed(got, &mut this.out)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn huff_string(s: &[u8]) -> Vec<u8> {
        let h = huffman_encode(s);
        let mut out = Vec::new();
        write_int(&mut out, 0x80, 7, h.len());
        out.extend(h);
        out
    }

    /// A request block as gRPC C-core writes it: indexed :method POST and :scheme http, the
    /// authority and path as literals with incremental indexing (Huffman-coded).
    fn request_block(authority: &[u8]) -> Vec<u8> {
        let mut b = vec![0x83, 0x86];
        b.push(0x41); // literal with indexing, name index 1 (:authority)
        b.extend(huff_string(authority));
        b.push(0x44); // :path
        b.extend(huff_string(b"/SpiffeWorkloadAPI/FetchX509SVID"));
        b.push(0x40); // new name
        b.extend(huff_string(b"workload.spiffe.io"));
        b.extend(huff_string(b"true"));
        b
    }

    /// Splits an output stream into frames after the preface.
    fn frames(mut s: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
        assert!(s.starts_with(PREFACE));
        s = &s[PREFACE.len()..];
        let mut out = Vec::new();
        while !s.is_empty() {
            let len = (usize::from(s[0]) << 16) | (usize::from(s[1]) << 8) | usize::from(s[2]);
            out.push((s[3], s[4], s[9..9 + len].to_vec()));
            s = &s[9 + len..];
        }
        out
    }

    #[test]
    fn huffman_round_trips() {
        for s in [
            &b"www.example.com"[..],
            b"tmp%2Fspire-agent%2Fpublic%2Fapi.sock",
            b"",
            &(0u8..=255).collect::<Vec<u8>>(),
        ] {
            assert_eq!(huffman_decode(&huffman_encode(s)).unwrap(), s);
        }
        // RFC 7541 C.4.1: "www.example.com".
        assert_eq!(
            hex::encode(huffman_encode(b"www.example.com")),
            "f1e3c2e5f23a6ba0ab90f4ff"
        );
        assert!(huffman_decode(&[0x00]).is_err(), "bad padding");
    }

    #[test]
    fn valid_authority_passes_through_byte_for_byte() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"localhost"),
        ));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        let mut rw = Rewriter::new();
        let mut out = Vec::new();
        // Fed one byte at a time: framing must not depend on read boundaries.
        for b in &input {
            rw.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, input);
    }

    #[test]
    fn percent_encoded_path_authority_is_replaced_and_later_blocks_stay_consistent() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED,
            1,
            &[
                &[2u8][..],
                &request_block(b"tmp%2Fagent%2Fapi.sock"),
                &[0, 0],
            ]
            .concat(),
        ));
        // Second request: the client refers to its dynamic table (authority at 62+2 = 64
        // after :path and the custom header were inserted) instead of repeating literals.
        let second = [0x83, 0x86, 0xc0, 0xbf, 0xbe];
        // Split across HEADERS + CONTINUATION.
        input.extend(frame(TYPE_HEADERS, FLAG_END_STREAM, 3, &second[..2]));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &second[2..]));
        let mut rw = Rewriter::new();
        let mut out = Vec::new();
        rw.feed(&input, &mut out).unwrap();
        let fs = frames(&out);
        assert_eq!(fs.len(), 3);
        let mut check = Decoder::new();
        for (i, (ty, flags, payload)) in fs.iter().enumerate().skip(1) {
            assert_eq!(*ty, TYPE_HEADERS);
            assert_ne!(flags & FLAG_END_HEADERS, 0);
            let headers = check.decode(payload).unwrap();
            let get = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == n.as_bytes())
                    .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            };
            assert_eq!(get(":authority").as_deref(), Some("localhost"), "block {i}");
            assert_eq!(
                get(":path").as_deref(),
                Some("/SpiffeWorkloadAPI/FetchX509SVID")
            );
            assert_eq!(get("workload.spiffe.io").as_deref(), Some("true"));
            assert_eq!(get(":method").as_deref(), Some("POST"));
        }
        assert_eq!(fs[2].1 & FLAG_END_STREAM, FLAG_END_STREAM);
        assert!(check.table.is_empty(), "re-encoded blocks never index");
    }

    #[test]
    fn non_http2_bytes_pass_through() {
        let mut rw = Rewriter::new();
        let mut out = Vec::new();
        rw.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out).unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0xff, 0xff, 0xff],
        ));
        let mut out = Vec::new();
        assert!(Rewriter::new().feed(&input, &mut out).is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, b"x"));
        assert!(Rewriter::new().feed(&input, &mut Vec::new()).is_err());
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let mut block = request_block(b"tmp%2Fa");
        block.push(0x40);
        block.extend(huff_string(b"x-big"));
        let big = vec![b'v'; 40_000];
        write_string(&mut block, &big);
        let mut input = PREFACE.to_vec();
        for chunk_start in (0..block.len()).step_by(MAX_FRAME) {
            let end = (chunk_start + MAX_FRAME).min(block.len());
            let ty = if chunk_start == 0 {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            let flags = if end == block.len() {
                FLAG_END_HEADERS
            } else {
                0
            };
            input.extend(frame(ty, flags, 1, &block[chunk_start..end]));
        }
        let mut out = Vec::new();
        Rewriter::new().feed(&input, &mut out).unwrap();
        let fs = frames(&out);
        assert!(fs.len() >= 3);
        assert!(fs.iter().all(|(_, _, p)| p.len() <= MAX_FRAME));
        let joined: Vec<u8> = fs.iter().flat_map(|(_, _, p)| p.clone()).collect();
        let headers = Decoder::new().decode(&joined).unwrap();
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == b"x-big" && v.len() == 40_000)
        );
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == b":authority" && v == b"localhost")
        );
    }
}
